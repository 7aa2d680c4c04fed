-- 'abandoned': a run that never recorded its end (its process was killed, e.g.
-- by SIGKILL or the Job's activeDeadlineSeconds, or the final write failed).
-- The next run marks such rows once it holds the reconciler's advisory lock,
-- when no other run can be live; finished_at is then when it was noticed, not
-- when the process died.
ALTER TABLE reconcile_runs DROP CONSTRAINT reconcile_runs_outcome_check;
ALTER TABLE reconcile_runs ADD CONSTRAINT reconcile_runs_outcome_check
    CHECK (outcome IN ('running', 'success', 'partial', 'failed', 'skipped', 'abandoned'));
