//! Where password hashes are checked: a few threads of their own, at a lower CPU priority than
//! the request workers. A login storm then takes the CPU nobody else wants: discovery, keys and
//! refreshes keep their latency, and logins queue (the queue holds jobs, not threads).

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// The nice value of the hashing threads (0 is the default, 19 the lowest priority).
const NICE: i32 = 10;

pub(crate) struct HashingPool {
    jobs: Mutex<Sender<Job>>,
}

impl HashingPool {
    pub fn new(threads: usize) -> Self {
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("keygate-hash-{i}"))
                .spawn(move || worker(&queue));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        Self {
            jobs: Mutex::new(jobs),
        }
    }

    /// A pool whose threads are all gone (tests of the failure path).
    #[cfg(test)]
    pub fn closed() -> Self {
        let (jobs, _) = channel::<Job>();
        Self {
            jobs: Mutex::new(jobs),
        }
    }

    /// Runs `f` on a hashing thread; `None` if no thread could take it.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // The request gave up (client gone, timeout): its hash would be wasted CPU, and in
            // a storm the queue would fill with such jobs.
            if tx.is_closed() {
                return;
            }
            let _ = tx.send(f());
        });
        self.jobs.lock().ok()?.send(job).ok()?;
        rx.await.ok()
    }
}

fn worker(queue: &Mutex<Receiver<Job>>) {
    lower_priority();
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let job = match queue.lock() {
            Ok(q) => q.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(),
            // The pool was dropped.
            Err(_) => return,
        }
    }
}

/// On Linux the nice value belongs to the thread (`setpriority` on the calling thread). Never
/// raises it: a process already running nicer than `NICE` keeps its own value.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let current = rustix::process::getpriority_process(None).unwrap_or(0);
        if current >= NICE {
            return;
        }
        if let Err(e) = rustix::process::setpriority_process(None, NICE) {
            tracing::warn!(error = %e, "cannot lower the priority of a password hashing thread");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_lower_priority_threads() {
        let pool = HashingPool::new(2);
        let (name, nice) = pool
            .run(|| {
                let name = std::thread::current().name().map(str::to_owned);
                (name, rustix::process::getpriority_process(None).unwrap())
            })
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("keygate-hash-"));
        // A process that is already niced (some CI runners are) only goes further down.
        assert!(nice >= NICE, "nice {nice}");
        // The request thread keeps its priority.
        assert!(rustix::process::getpriority_process(None).unwrap() < NICE);
        for i in 0..8 {
            assert_eq!(pool.run(move || i).await, Some(i));
        }
    }

    #[tokio::test]
    async fn a_job_whose_request_gave_up_is_skipped() {
        let pool = Arc::new(HashingPool::new(1));
        let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // The one thread is busy; the next job is queued, then its caller gives up.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let p = pool.clone();
        let busy = tokio::spawn(async move { p.run(move || hold.recv().is_ok()).await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let counted = ran.clone();
        let abandoned = pool.run(move || counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        let gave_up = tokio::time::timeout(std::time::Duration::from_millis(20), abandoned).await;
        assert!(gave_up.is_err(), "still queued behind the busy thread");
        release.send(()).unwrap();
        assert_eq!(busy.await.unwrap(), Some(true));
        // A later job runs, proving the queue moved past the abandoned one without running it.
        assert_eq!(pool.run(|| 7).await, Some(7));
        assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
