COPY "jc_stage"
FROM 's3://acme-staging/jankycron/loads/github_pull_requests/20261126T114512123456Z-3fa2c1/manifest.json'
IAM_ROLE default
FORMAT AS JSON 'auto ignorecase'
GZIP
MANIFEST
TIMEFORMAT 'auto'
DATEFORMAT 'auto'
STATUPDATE OFF
COMPUPDATE OFF
MAXERROR 0
REGION 'eu-west-1'
NOLOAD
