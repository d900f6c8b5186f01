-- Tables of the GitHub Enterprise job (jobs/github_enterprise.py; rows built in
-- jankycron/sources/github.py). Portable SQL: runs on PostgreSQL and DuckDB as written. The
-- Redshift form (DISTKEY/SORTKEY/ENCODE, and explicit widths for the bodies and messages
-- left as plain varchar here, since Redshift reads a bare varchar as varchar(256)) comes with
-- the migrations item of issue 5. Widths are in bytes on Redshift: a 256-character GitHub
-- title needs varchar(1024). Merge keys: id, except github_commits (repo_id, sha).
-- Logins: GHES allows longer ones than github.com's 39 characters (LDAP/SAML names).
CREATE TABLE github_repositories (
    id                 bigint        NOT NULL,
    full_name          varchar(512)  NOT NULL,
    owner_login        varchar(255),
    name               varchar(255),
    description        varchar(2048),
    private            boolean,
    fork               boolean,
    archived           boolean,
    visibility         varchar(20),
    default_branch     varchar(1024),
    language           varchar(100),
    html_url           varchar(2048),
    stargazers_count   integer,
    forks_count        integer,
    open_issues_count  integer,
    created_at         timestamptz,
    updated_at         timestamptz,
    pushed_at          timestamptz
);

CREATE TABLE github_pull_requests (
    id                 bigint        NOT NULL,
    repo_id            bigint        NOT NULL,
    repo               varchar(512)  NOT NULL,
    number             integer       NOT NULL,
    title              varchar(1024),
    body               varchar,
    state              varchar(20),
    draft              boolean,
    user_login         varchar(255),
    user_id            bigint,
    author_association varchar(30),
    head_ref           varchar(1024),
    head_sha           varchar(64),
    base_ref           varchar(1024),
    merge_commit_sha   varchar(64),
    labels             varchar,
    html_url           varchar(2048),
    created_at         timestamptz,
    updated_at         timestamptz   NOT NULL,
    closed_at          timestamptz,
    merged_at          timestamptz
);

CREATE TABLE github_issues (
    id                 bigint        NOT NULL,
    repo_id            bigint        NOT NULL,
    repo               varchar(512)  NOT NULL,
    number             integer       NOT NULL,
    title              varchar(1024),
    body               varchar,
    state              varchar(20),
    state_reason       varchar(30),
    user_login         varchar(255),
    user_id            bigint,
    assignee_login     varchar(255),
    labels             varchar,
    comments           integer,
    author_association varchar(30),
    html_url           varchar(2048),
    created_at         timestamptz,
    updated_at         timestamptz   NOT NULL,
    closed_at          timestamptz
);

CREATE TABLE github_issue_comments (
    id                 bigint        NOT NULL,
    repo_id            bigint        NOT NULL,
    repo               varchar(512)  NOT NULL,
    issue_number       integer,
    user_login         varchar(255),
    user_id            bigint,
    author_association varchar(30),
    body               varchar,
    html_url           varchar(2048),
    created_at         timestamptz,
    updated_at         timestamptz   NOT NULL
);

CREATE TABLE github_review_comments (
    id                  bigint        NOT NULL,
    repo_id             bigint        NOT NULL,
    repo                varchar(512)  NOT NULL,
    pull_request_number integer,
    review_id           bigint,
    in_reply_to_id      bigint,
    user_login          varchar(255),
    user_id             bigint,
    author_association  varchar(30),
    body                varchar,
    path                varchar(4096),
    line                integer,
    commit_id           varchar(64),
    html_url            varchar(2048),
    created_at          timestamptz,
    updated_at          timestamptz   NOT NULL
);

CREATE TABLE github_reviews (
    id                  bigint        NOT NULL,
    repo_id             bigint        NOT NULL,
    repo                varchar(512)  NOT NULL,
    pull_request_number integer       NOT NULL,
    user_login          varchar(255),
    user_id             bigint,
    state               varchar(30),
    body                varchar,
    commit_id           varchar(64),
    author_association  varchar(30),
    html_url            varchar(2048),
    submitted_at        timestamptz
);

CREATE TABLE github_commits (
    repo_id            bigint        NOT NULL,
    repo               varchar(512)  NOT NULL,
    sha                varchar(64)   NOT NULL,
    message            varchar,
    author_login       varchar(255),
    author_name        varchar(255),
    committer_login    varchar(255),
    committer_name     varchar(255),
    authored_at        timestamptz,
    committed_at       timestamptz,
    parent_count       integer,
    html_url           varchar(2048)
);
