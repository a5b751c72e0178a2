//! What a trigger gets while its inventory already has a running job.

/// `reject`, `join` or `queue` (contract §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBusy {
    /// Refuse with "App deployment is already running".
    Reject,
    /// Answer with the running job.
    Join,
    /// Queue one job that starts when the running one ends.
    Queue,
}

impl OnBusy {
    pub fn as_str(self) -> &'static str {
        match self {
            OnBusy::Reject => "reject",
            OnBusy::Join => "join",
            OnBusy::Queue => "queue",
        }
    }
}
