"""`JobStore`: the fine-tuning runner records each job's state here, and the UI polls it.

Keeping job state in the database (not in the UI process's memory) lets a restarted app re-attach to a running
job and list finished ones.
"""

from pathlib import Path

from sqlalchemy import select

from .database import Database
from .records import JOB_FIELDS, job_dict
from .schema import JOB_STATUSES, Job, utcnow

_FINISHED = ("done", "failed", "aborted")


class JobStore:
    """The jobs table of `database` (shared with the conversation store)."""

    def __init__(self, database: Database):
        self.database = database
        self._session = database.session

    def create_job(self, args: dict | list, run_dir: str | Path | None = None) -> int:
        """Queue a job with its training settings (or argument list); returns the job id."""
        with self._session(write=True) as s:
            job = Job(status="queued", args=args, run_dir=str(run_dir) if run_dir is not None else None)
            s.add(job)
            s.flush()
            return job.id

    def update_job(self, job_id: int, **fields) -> dict:
        """Change a job's fields (status, pid, run_dir, started_at, finished_at, final_metrics, error, args).

        Moving to "running" stamps `started_at`, and to "done"/"failed"/"aborted" stamps `finished_at`, unless the
        caller passes them. Returns the updated job.
        """
        unknown = set(fields) - set(JOB_FIELDS)
        if unknown:
            raise ValueError(f"unknown job fields {sorted(unknown)}; expected {JOB_FIELDS}")
        status = fields.get("status")
        if status is not None and status not in JOB_STATUSES:
            raise ValueError(f"job status must be one of {JOB_STATUSES}, got {status!r}")
        if isinstance(fields.get("run_dir"), Path):
            fields["run_dir"] = str(fields["run_dir"])
        with self._session(write=True) as s:
            job = s.get(Job, job_id)
            if job is None:
                raise LookupError(f"no job {job_id}")
            for key, value in fields.items():
                setattr(job, key, value)
            if status == "running" and job.started_at is None:
                job.started_at = utcnow()
            if status in _FINISHED and job.finished_at is None:
                job.finished_at = utcnow()
            s.flush()
            return job_dict(job)

    def get_job(self, job_id: int) -> dict:
        """One job (raises LookupError for an unknown id)."""
        with self._session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise LookupError(f"no job {job_id}")
            return job_dict(job)

    def list_jobs(self, status: str | None = None) -> list[dict]:
        """Jobs, newest first, optionally only those with `status`."""
        query = select(Job).order_by(Job.id.desc())
        if status is not None:
            query = query.where(Job.status == status)
        with self._session() as s:
            return [job_dict(job) for job in s.scalars(query)]
