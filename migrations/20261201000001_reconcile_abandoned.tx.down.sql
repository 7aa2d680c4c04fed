-- The old CHECK has no 'abandoned': such runs did not succeed, so 'failed'
-- (their error column still says why).
UPDATE reconcile_runs SET outcome = 'failed' WHERE outcome = 'abandoned';
ALTER TABLE reconcile_runs DROP CONSTRAINT reconcile_runs_outcome_check;
ALTER TABLE reconcile_runs ADD CONSTRAINT reconcile_runs_outcome_check
    CHECK (outcome IN ('running', 'success', 'partial', 'failed', 'skipped'));
