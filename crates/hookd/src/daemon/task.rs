//! The essential tasks of the daemon: those whose end stops it (see `supervisor`). Their
//! names label `hookd_task_failures_total`.

/// An essential task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Dispatcher,
    Recorder,
    ResendJobs,
    WakeupRelay,
    Maintenance,
    HttpServer,
    DatabaseWriter,
}

impl Task {
    pub const ALL: [Task; 7] = [
        Task::Dispatcher,
        Task::Recorder,
        Task::ResendJobs,
        Task::WakeupRelay,
        Task::Maintenance,
        Task::HttpServer,
        Task::DatabaseWriter,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Dispatcher => "dispatcher",
            Task::Recorder => "recorder",
            Task::ResendJobs => "resend_jobs",
            Task::WakeupRelay => "wakeup_relay",
            Task::Maintenance => "maintenance",
            Task::HttpServer => "http_server",
            Task::DatabaseWriter => "database_writer",
        }
    }

    /// What messages call it.
    pub fn describe(self) -> &'static str {
        match self {
            Task::Dispatcher => "the dispatcher",
            Task::Recorder => "the recorder",
            Task::ResendJobs => "the resend job worker",
            Task::WakeupRelay => "the wake-up relay",
            Task::Maintenance => "the maintenance jobs",
            Task::HttpServer => "the HTTP server",
            Task::DatabaseWriter => "the database writer",
        }
    }

    /// The task a metric label names.
    pub fn from_label(label: &str) -> Option<Task> {
        Task::ALL.into_iter().find(|t| t.as_str() == label)
    }
}
