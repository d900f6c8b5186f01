CREATE TEMP TABLE "jc_stage" (LIKE "analytics"."github_reviews");
ALTER TABLE "jc_stage" ADD COLUMN "__jc_seq" VARCHAR(100);
LOCK "analytics"."github_reviews";
SELECT jc_batch, SUM(jc_n - 1) FROM (SELECT LEFT("jc_stage"."__jc_seq", LENGTH("jc_stage"."__jc_seq") - 13) AS jc_batch, COUNT(*) AS jc_n FROM "jc_stage" GROUP BY "repo", "id", LEFT("jc_stage"."__jc_seq", LENGTH("jc_stage"."__jc_seq") - 13) HAVING COUNT(*) > 1) r GROUP BY jc_batch;
DELETE FROM "jc_stage" USING (SELECT "repo", "id", MAX("__jc_seq") AS jc_last FROM "jc_stage" GROUP BY "repo", "id" HAVING COUNT(*) > 1) d WHERE "jc_stage"."repo" = d."repo" AND "jc_stage"."id" = d."id" AND "jc_stage"."__jc_seq" < d.jc_last;
DELETE FROM "analytics"."github_reviews" USING "jc_stage" WHERE "analytics"."github_reviews"."repo" = "jc_stage"."repo" AND "analytics"."github_reviews"."id" = "jc_stage"."id";
INSERT INTO "analytics"."github_reviews" ("repo", "id", "state", "submitted_at") SELECT "repo", "id", "state", "submitted_at" FROM "jc_stage";
