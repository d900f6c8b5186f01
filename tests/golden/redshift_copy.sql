COPY "analytics"."github_pull_requests" ("id", "title", "userid", "__jc_seq")
FROM 's3://acme-staging/jankycron/loads/github_pull_requests/20261126T114512123456Z-3fa2c1/manifest.json'
IAM_ROLE 'arn:aws:iam::123456789012:role/RedshiftLoad'
FORMAT AS JSON 'auto ignorecase'
GZIP
MANIFEST
TIMEFORMAT 'auto'
DATEFORMAT 'auto'
STATUPDATE OFF
COMPUPDATE OFF
MAXERROR 0
