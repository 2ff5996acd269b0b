-- Callbacks name a provider task: find its job without scanning the table.
CREATE INDEX jobs_provider_task ON jobs (provider_task_id) WHERE provider_task_id IS NOT NULL;
