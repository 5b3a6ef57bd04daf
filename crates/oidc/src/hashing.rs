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

    /// Runs `f` on a hashing thread; `None` if no thread could take it.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
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

/// On Linux the nice value belongs to the thread (`setpriority` on the calling thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(None, NICE) {
        tracing::warn!(error = %e, "cannot lower the priority of a password hashing thread");
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
}
