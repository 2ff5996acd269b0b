-- A member may cancel their job while it is queued or at the provider: the same change as SQLite migration
-- 0012_cancelled.sql. A new ending, 'cancelled', which may be charged (what was reserved, once the submit may
-- have been sent: the provider bills it), and which ends a job like the others: no live source needed, pruned
-- (jobs_ended), settled (jobs_settle) and stripped of inline data (jobs_drop_inline).
-- PostgreSQL changes the CHECKs in place. They keep the names PostgreSQL gave them in 0001 (jobs_check is the
-- column CHECK on charged_images BETWEEN 0 AND reserved_images, so the table CHECKs are jobs_check1 to 5 in
-- order); the new ones only allow more, so every row passes them.
ALTER TABLE jobs
    DROP CONSTRAINT jobs_status_check,
    DROP CONSTRAINT jobs_check1,
    DROP CONSTRAINT jobs_check4,
    ADD CONSTRAINT jobs_status_check CHECK (status IN (
        'queued', 'submitting', 'submitted', 'succeeded', 'posted', 'failed', 'lost', 'cancelled')),
    ADD CONSTRAINT jobs_check1
        CHECK (kind = 'generate' OR source_image_url IS NOT NULL OR status IN ('posted', 'failed', 'lost', 'cancelled')),
    ADD CONSTRAINT jobs_check4 CHECK (status IN ('posted', 'cancelled') OR charged_images = 0);

DROP INDEX jobs_ended;
CREATE INDEX jobs_ended ON jobs (finished_at) WHERE status IN ('posted', 'failed', 'lost', 'cancelled');

-- The functions of 0001 stay: they settle what NEW.charged_images says (cancelled: nothing while queued,
-- everything reserved once submitted) and drop inline data whatever the ending. Only when they run changes.
DROP TRIGGER jobs_settle ON jobs;
CREATE TRIGGER jobs_settle AFTER UPDATE OF status ON jobs
FOR EACH ROW
WHEN (OLD.status IN ('queued', 'submitting', 'submitted', 'succeeded')
      AND NEW.status IN ('posted', 'failed', 'lost', 'cancelled'))
EXECUTE FUNCTION jobs_settle();

DROP TRIGGER jobs_drop_inline ON jobs;
CREATE TRIGGER jobs_drop_inline BEFORE UPDATE OF status ON jobs
FOR EACH ROW
WHEN (NEW.status IN ('posted', 'failed', 'lost', 'cancelled')
      AND (NEW.source_image_url LIKE 'data:%' OR strpos(NEW.result, '"data:') > 0))
EXECUTE FUNCTION jobs_drop_inline();
