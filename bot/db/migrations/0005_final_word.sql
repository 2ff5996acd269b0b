-- A job's last word to its member (done, or why it failed) is owed from the moment the job ends until it
-- has been sent: a bot stopped in between sends it at its next start. The interaction token it may need
-- is kept until then, and cleared with it.
ALTER TABLE jobs ADD COLUMN final_word_owed INTEGER NOT NULL DEFAULT 0 CHECK (final_word_owed IN (0, 1));
CREATE INDEX jobs_final_word_owed ON jobs (id) WHERE final_word_owed = 1;
