-- Random clicks, counted per user; the totals go to a blackhole sink.
CREATE TABLE clicks (
  user_id INT,
  url     STRING
) WITH (
  'connector' = 'datagen',
  'rows-per-second' = '10',
  'fields.user_id.min' = '1',
  'fields.user_id.max' = '20'
);

CREATE TABLE clicks_per_user (
  user_id INT,
  n       BIGINT
) WITH ('connector' = 'blackhole');

INSERT INTO clicks_per_user SELECT user_id, COUNT(*) FROM clicks GROUP BY user_id;
