//! What is predicted: the task kinds and the label window after a cutoff date.
//!
//! A label looks at the days strictly after the cutoff and up to `horizon_days` later, that is
//! the window `(cutoff, cutoff + horizon_days]` in whole UTC days:
//! - **churn** is 1 if the customer has no transaction in the window, else 0;
//! - **propensity** is 1 if the customer has at least one transaction in the window, else 0;
//! - **spend** is the sum of the customer's amounts in the window (unscaled).
//!
//! The caller must choose a cutoff whose label window the data fully covers; a window running
//! past the end of the export would make every customer look churned.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The prediction task a model is trained for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Will the customer make no purchase in the label window? (binary)
    Churn,
    /// Will the customer make at least one purchase in the label window? (binary)
    Propensity,
    /// How much will the customer spend in the label window? (regression)
    Spend,
}

impl TaskKind {
    /// Every task, in the order used in messages.
    pub const ALL: &'static [TaskKind] = &[TaskKind::Churn, TaskKind::Propensity, TaskKind::Spend];

    /// The name used in configs and on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            TaskKind::Churn => "churn",
            TaskKind::Propensity => "propensity",
            TaskKind::Spend => "spend",
        }
    }

    /// True for tasks with a continuous label, false for binary classification.
    pub fn is_regression(&self) -> bool {
        matches!(self, TaskKind::Spend)
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A task name that is not one of [`TaskKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown task '{name}'; expected one of: churn, propensity, spend")]
pub struct UnknownTaskError {
    /// The name that was given.
    pub name: String,
}

impl FromStr for TaskKind {
    type Err = UnknownTaskError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        TaskKind::ALL
            .iter()
            .copied()
            .find(|task| task.as_str() == name)
            .ok_or_else(|| UnknownTaskError {
                name: name.to_owned(),
            })
    }
}

/// Which label to compute and over which window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelSpec {
    /// The task whose label is computed.
    pub task: TaskKind,
    /// Last day whose transactions feed the features (inclusive, whole UTC day).
    pub cutoff: chrono::NaiveDate,
    /// Length of the label window after the cutoff, in days.
    pub horizon_days: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_named() {
        for task in TaskKind::ALL {
            assert_eq!(task.as_str().parse::<TaskKind>(), Ok(*task));
            assert_eq!(task.to_string(), task.as_str());
        }
        let error = "Churn".parse::<TaskKind>().map(|_| ()).unwrap_err();
        assert_eq!(
            error,
            UnknownTaskError {
                name: "Churn".to_owned()
            }
        );
        let message = error.to_string();
        assert!(message.contains("'Churn'"), "{message}");
        for task in TaskKind::ALL {
            assert!(message.contains(task.as_str()), "{message}");
        }
    }

    #[test]
    fn only_spend_is_regression() {
        let regression: Vec<TaskKind> = TaskKind::ALL
            .iter()
            .copied()
            .filter(TaskKind::is_regression)
            .collect();
        assert_eq!(regression, [TaskKind::Spend]);
    }

    #[test]
    fn serde_uses_snake_case_names() {
        let json = serde_json::to_string(&TaskKind::Propensity).unwrap_or_default();
        assert_eq!(json, "\"propensity\"");
    }
}
