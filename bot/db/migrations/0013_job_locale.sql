-- The language of the member who asked for a job (Discord's locale of their client, e.g. 'de', 'zh-CN'), kept
-- with the job: the runner edits the member's status line long after their interaction is gone, and shows it
-- in that language. NULL (jobs recorded before, and requests without an interaction): the server's language
-- or English.
ALTER TABLE jobs ADD COLUMN locale TEXT;
