//! Who owns the long-running tasks, and how they stop.
//!
//! One [`Tasks`] is made by the process (chronik-server) and handed down. Every long-running
//! task (the Kafka listener, the admin API, the metadata reconciler, retention, the group
//! reaper; later the Raft transport) is spawned through it, so there is one way to stop them
//! (a cancellation token, with a child per partition replica) and one place that waits for
//! them (a task tracker). A task that ends or panics while nothing asked it to stop is a
//! failure: it is recorded and everything is cancelled, so the process exits with that error
//! instead of running half alive.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::Cause;

/// Why the tasks stopped when nobody asked them to.
#[derive(Debug, thiserror::Error)]
pub enum TaskFailure {
    #[error("task '{task}' stopped unexpectedly")]
    Ended { task: &'static str },
    #[error("task '{task}' failed: {source}")]
    Failed {
        task: &'static str,
        #[source]
        source: Cause,
    },
    #[error("task '{task}' panicked: {message}")]
    Panicked { task: &'static str, message: String },
}

/// A scope of tasks: a cancellation token (a child of its parent's), a tracker of the tasks
/// spawned in it (which its ancestors' trackers count too), and the process's failure record.
/// Clones share everything.
#[derive(Clone)]
pub struct Tasks {
    root: CancellationToken,
    cancel: CancellationToken,
    /// This scope's tracker first, then its ancestors'.
    trackers: Vec<TaskTracker>,
    failure: Arc<Mutex<Option<TaskFailure>>>,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks::new()
    }
}

impl Tasks {
    /// The process's root scope.
    pub fn new() -> Tasks {
        let root = CancellationToken::new();
        Tasks { cancel: root.clone(), root, trackers: vec![TaskTracker::new()], failure: Arc::default() }
    }

    /// A scope cancelled with this one, or on its own (a partition replica that stops).
    pub fn child(&self) -> Tasks {
        let mut trackers = vec![TaskTracker::new()];
        trackers.extend(self.trackers.iter().cloned());
        Tasks { cancel: self.cancel.child_token(), trackers, ..self.clone() }
    }

    /// Resolves once this scope is cancelled.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Cancels this scope and its children.
    pub fn cancel(&self) {
        self.cancel.cancel()
    }

    /// The token tasks of this scope watch.
    pub fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Spawns a long-running task that runs until this scope is cancelled. `task` gets the
    /// scope's token and should return once it is cancelled; returning earlier (with or without
    /// an error) or panicking is recorded as the process's failure and cancels everything.
    pub fn spawn<F, Fut, E>(&self, name: &'static str, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<Cause>,
    {
        let fut = task(self.cancel.clone());
        let scope = self.clone();
        let supervised = async move {
            let outcome = AssertUnwindSafe(fut).catch_unwind().await;
            if scope.cancel.is_cancelled() {
                if let Ok(Err(e)) = outcome {
                    tracing::warn!(task = name, "task ended with an error while stopping: {}", e.into());
                }
                return;
            }
            let failure = match outcome {
                Ok(Ok(())) => TaskFailure::Ended { task: name },
                Ok(Err(e)) => TaskFailure::Failed { task: name, source: e.into() },
                Err(panic) => TaskFailure::Panicked { task: name, message: panic_message(&panic) },
            };
            tracing::error!("{failure}; stopping");
            scope.failure.lock().get_or_insert(failure);
            scope.root.cancel();
        };
        // Counted by every enclosing scope, so stopping any of them waits for it.
        let mut tracked: futures::future::BoxFuture<'static, ()> = Box::pin(supervised);
        for ancestor in &self.trackers[1..] {
            tracked = Box::pin(ancestor.track_future(tracked));
        }
        self.trackers[0].spawn(tracked);
    }

    /// Spawns a task that may end on its own (a peer's connection, one request): stopping the
    /// scope waits for it like any other, but its ending is not a failure. It should watch the
    /// scope's token (or something tied to it) so that it ends when the scope stops.
    pub fn spawn_transient<Fut>(&self, name: &'static str, task: Fut)
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let supervised = async move {
            if let Err(panic) = AssertUnwindSafe(task).catch_unwind().await {
                tracing::error!(task = name, "task panicked: {}", panic_message(&panic));
            }
        };
        let mut tracked: futures::future::BoxFuture<'static, ()> = Box::pin(supervised);
        for ancestor in &self.trackers[1..] {
            tracked = Box::pin(ancestor.track_future(tracked));
        }
        self.trackers[0].spawn(tracked);
    }

    /// Resolves when the process must stop because a task failed.
    pub async fn failed(&self) {
        self.root.cancelled().await
    }

    /// Cancels this scope and waits for every task spawned in it (or in its children).
    pub async fn stop(&self) {
        self.cancel.cancel();
        self.trackers[0].close();
        self.trackers[0].wait().await;
    }

    /// Cancels everything and waits for every spawned task to return. Returns the failure
    /// that stopped the process, if one did.
    pub async fn shutdown(&self) -> Option<TaskFailure> {
        self.root.cancel();
        let root = self.trackers.last().expect("a scope has at least its own tracker");
        root.close();
        root.wait().await;
        self.failure.lock().take()
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spawns a task in `scope` that waits to be cancelled; the flag says it saw the cancel.
    fn spawn_waiter(scope: &Tasks, name: &'static str) -> Arc<Mutex<bool>> {
        let stopped = Arc::new(Mutex::new(false));
        let flag = stopped.clone();
        scope.spawn(name, move |cancel| async move {
            cancel.cancelled().await;
            *flag.lock() = true;
            Ok::<(), Cause>(())
        });
        stopped
    }

    #[tokio::test]
    async fn cancelled_tasks_stop_and_are_awaited() {
        let tasks = Tasks::new();
        let (a, b) = (spawn_waiter(&tasks, "a"), spawn_waiter(&tasks, "b"));
        assert!(tasks.shutdown().await.is_none(), "nothing failed");
        assert!(*a.lock() && *b.lock(), "shutdown waited for both");
    }

    #[tokio::test]
    async fn a_task_that_dies_stops_everything_and_is_reported() {
        // (what the task does, what the report says)
        type Body = fn(CancellationToken) -> futures::future::BoxFuture<'static, Result<(), Cause>>;
        let cases: Vec<(Body, &str)> = vec![
            (|_| async { Ok(()) }.boxed(), "task 'victim' stopped unexpectedly"),
            (|_| async { Err("disk on fire".into()) }.boxed(), "task 'victim' failed: disk on fire"),
            (|_| async { panic!("boom") }.boxed(), "task 'victim' panicked: boom"),
        ];
        for (body, expected) in cases {
            let tasks = Tasks::new();
            let survivor_stopped = spawn_waiter(&tasks.child(), "survivor");
            tasks.spawn("victim", body);
            tokio::time::timeout(std::time::Duration::from_secs(5), tasks.failed()).await.expect("failure noticed");
            let failure = tasks.shutdown().await.expect("reported");
            assert_eq!(failure.to_string(), expected);
            assert!(*survivor_stopped.lock(), "{expected}: the other task was cancelled and awaited");
        }
    }

    #[tokio::test]
    async fn a_stopped_child_scope_leaves_its_parent_running() {
        let tasks = Tasks::new();
        let child = tasks.child();
        let grandchild = child.child();
        let done = spawn_waiter(&grandchild, "inner");
        child.stop().await;
        assert!(*done.lock(), "stopping a scope waits for its children's tasks");
        assert!(grandchild.is_cancelled());
        assert!(!tasks.is_cancelled());
        assert!(tasks.shutdown().await.is_none());
    }
}
