-- Tables of the GitHub Enterprise job (jobs/github_enterprise.py; rows built in
-- jankycron/sources/github.py), in Redshift form; `jankycron migrate` derives the PostgreSQL
-- and DuckDB form (see jankycron/migrate.py). Widths are in bytes on Redshift: a 256-character
-- GitHub title needs varchar(1024). Bodies and commit messages take varchar(65535), the most
-- Redshift holds: a longer one is a dead letter, never truncated. Merge keys: id, except
-- github_commits (repo_id, sha), which is distributed on sha. github_repositories is small and
-- joined by everything: DISTSTYLE ALL. Each table is sorted on its time column.
-- Logins: GHES allows longer ones than github.com's 39 characters (LDAP/SAML names).
CREATE TABLE IF NOT EXISTS github_repositories (
    id                 bigint        NOT NULL ENCODE az64,
    full_name          varchar(512)  NOT NULL ENCODE zstd,
    owner_login        varchar(255)           ENCODE zstd,
    name               varchar(255)           ENCODE zstd,
    description        varchar(2048)          ENCODE zstd,
    private            boolean                ENCODE zstd,
    fork               boolean                ENCODE zstd,
    archived           boolean                ENCODE zstd,
    visibility         varchar(20)            ENCODE zstd,
    default_branch     varchar(1024)          ENCODE zstd,
    language           varchar(100)           ENCODE zstd,
    html_url           varchar(2048)          ENCODE zstd,
    stargazers_count   integer                ENCODE az64,
    forks_count        integer                ENCODE az64,
    open_issues_count  integer                ENCODE az64,
    created_at         timestamptz            ENCODE az64,
    updated_at         timestamptz            ENCODE raw,
    pushed_at          timestamptz            ENCODE az64
)
DISTSTYLE ALL
SORTKEY (updated_at);

CREATE TABLE IF NOT EXISTS github_pull_requests (
    id                 bigint        NOT NULL ENCODE az64,
    repo_id            bigint        NOT NULL ENCODE az64,
    repo               varchar(512)  NOT NULL ENCODE zstd,
    number             integer       NOT NULL ENCODE az64,
    title              varchar(1024)          ENCODE zstd,
    body               varchar(65535)         ENCODE zstd,
    state              varchar(20)            ENCODE zstd,
    draft              boolean                ENCODE zstd,
    user_login         varchar(255)           ENCODE zstd,
    user_id            bigint                 ENCODE az64,
    author_association varchar(30)            ENCODE zstd,
    head_ref           varchar(1024)          ENCODE zstd,
    head_sha           varchar(64)            ENCODE zstd,
    base_ref           varchar(1024)          ENCODE zstd,
    merge_commit_sha   varchar(64)            ENCODE zstd,
    labels             varchar(4096)          ENCODE zstd,
    html_url           varchar(2048)          ENCODE zstd,
    created_at         timestamptz            ENCODE az64,
    updated_at         timestamptz   NOT NULL ENCODE raw,
    closed_at          timestamptz            ENCODE az64,
    merged_at          timestamptz            ENCODE az64
)
DISTKEY (id)
SORTKEY (updated_at);

CREATE TABLE IF NOT EXISTS github_issues (
    id                 bigint        NOT NULL ENCODE az64,
    repo_id            bigint        NOT NULL ENCODE az64,
    repo               varchar(512)  NOT NULL ENCODE zstd,
    number             integer       NOT NULL ENCODE az64,
    title              varchar(1024)          ENCODE zstd,
    body               varchar(65535)         ENCODE zstd,
    state              varchar(20)            ENCODE zstd,
    state_reason       varchar(30)            ENCODE zstd,
    user_login         varchar(255)           ENCODE zstd,
    user_id            bigint                 ENCODE az64,
    assignee_login     varchar(255)           ENCODE zstd,
    labels             varchar(4096)          ENCODE zstd,
    comments           integer                ENCODE az64,
    author_association varchar(30)            ENCODE zstd,
    html_url           varchar(2048)          ENCODE zstd,
    created_at         timestamptz            ENCODE az64,
    updated_at         timestamptz   NOT NULL ENCODE raw,
    closed_at          timestamptz            ENCODE az64
)
DISTKEY (id)
SORTKEY (updated_at);

CREATE TABLE IF NOT EXISTS github_issue_comments (
    id                 bigint        NOT NULL ENCODE az64,
    repo_id            bigint        NOT NULL ENCODE az64,
    repo               varchar(512)  NOT NULL ENCODE zstd,
    issue_number       integer                ENCODE az64,
    user_login         varchar(255)           ENCODE zstd,
    user_id            bigint                 ENCODE az64,
    author_association varchar(30)            ENCODE zstd,
    body               varchar(65535)         ENCODE zstd,
    html_url           varchar(2048)          ENCODE zstd,
    created_at         timestamptz            ENCODE az64,
    updated_at         timestamptz   NOT NULL ENCODE raw
)
DISTKEY (id)
SORTKEY (updated_at);

CREATE TABLE IF NOT EXISTS github_review_comments (
    id                  bigint        NOT NULL ENCODE az64,
    repo_id             bigint        NOT NULL ENCODE az64,
    repo                varchar(512)  NOT NULL ENCODE zstd,
    pull_request_number integer                ENCODE az64,
    review_id           bigint                 ENCODE az64,
    in_reply_to_id      bigint                 ENCODE az64,
    user_login          varchar(255)           ENCODE zstd,
    user_id             bigint                 ENCODE az64,
    author_association  varchar(30)            ENCODE zstd,
    body                varchar(65535)         ENCODE zstd,
    path                varchar(4096)          ENCODE zstd,
    line                integer                ENCODE az64,
    commit_id           varchar(64)            ENCODE zstd,
    html_url            varchar(2048)          ENCODE zstd,
    created_at          timestamptz            ENCODE az64,
    updated_at          timestamptz   NOT NULL ENCODE raw
)
DISTKEY (id)
SORTKEY (updated_at);

CREATE TABLE IF NOT EXISTS github_reviews (
    id                  bigint        NOT NULL ENCODE az64,
    repo_id             bigint        NOT NULL ENCODE az64,
    repo                varchar(512)  NOT NULL ENCODE zstd,
    pull_request_number integer       NOT NULL ENCODE az64,
    user_login          varchar(255)           ENCODE zstd,
    user_id             bigint                 ENCODE az64,
    state               varchar(30)            ENCODE zstd,
    body                varchar(65535)         ENCODE zstd,
    commit_id           varchar(64)            ENCODE zstd,
    author_association  varchar(30)            ENCODE zstd,
    html_url            varchar(2048)          ENCODE zstd,
    submitted_at        timestamptz            ENCODE raw
)
DISTKEY (id)
SORTKEY (submitted_at);

CREATE TABLE IF NOT EXISTS github_commits (
    repo_id            bigint        NOT NULL ENCODE az64,
    repo               varchar(512)  NOT NULL ENCODE zstd,
    sha                varchar(64)   NOT NULL ENCODE zstd,
    message            varchar(65535)         ENCODE zstd,
    author_login       varchar(255)           ENCODE zstd,
    author_name        varchar(255)           ENCODE zstd,
    committer_login    varchar(255)           ENCODE zstd,
    committer_name     varchar(255)           ENCODE zstd,
    authored_at        timestamptz            ENCODE az64,
    committed_at       timestamptz            ENCODE raw,
    parent_count       integer                ENCODE az64,
    html_url           varchar(2048)          ENCODE zstd
)
DISTKEY (sha)
SORTKEY (committed_at);
