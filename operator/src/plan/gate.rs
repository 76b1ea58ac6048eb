//! Whether a pool's round may change EC2 at all: a paused pool changes nothing, not even to finish
//! journaled work; a pool frozen because its node is cordoned (the policy's
//! `freezeWhenCordoned`) starts nothing new but still finishes or rolls back what a round before
//! it began, so a half-done create never leaks an ENI.

/// What a round may do this time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Grow, release and replay the journal.
    Open,
    /// Replay the journal only: the node is cordoned and the policy freezes cordoned nodes.
    Frozen,
    /// Nothing (`spec.paused`).
    Paused,
}

impl Gate {
    /// From the pool's `spec.paused`, the effective `freezeWhenCordoned` and the Node's
    /// `spec.unschedulable`. Pausing wins: it is the stronger stop.
    pub fn decide(paused: bool, freeze_when_cordoned: bool, cordoned: bool) -> Gate {
        if paused {
            Gate::Paused
        } else if freeze_when_cordoned && cordoned {
            Gate::Frozen
        } else {
            Gate::Open
        }
    }

    /// Growth, release of excess and of empty ENIs may start.
    pub fn may_start_work(self) -> bool {
        self == Gate::Open
    }

    /// Journaled work (started by an earlier round) may be finished or rolled back.
    pub fn may_replay(self) -> bool {
        self != Gate::Paused
    }
}

#[cfg(test)]
mod tests {
    use super::Gate;

    #[test]
    fn only_a_cordoned_node_under_a_freezing_policy_is_frozen_and_pausing_wins() {
        // (paused, freezeWhenCordoned, cordoned) -> gate, may start work, may replay
        let cases = [
            ((false, false, false), Gate::Open, true, true),
            ((false, false, true), Gate::Open, true, true),
            ((false, true, false), Gate::Open, true, true),
            ((false, true, true), Gate::Frozen, false, true),
            ((true, false, false), Gate::Paused, false, false),
            ((true, true, true), Gate::Paused, false, false),
        ];
        for ((paused, freeze, cordoned), gate, start, replay) in cases {
            let g = Gate::decide(paused, freeze, cordoned);
            assert_eq!(g, gate, "paused={paused} freeze={freeze} cordoned={cordoned}");
            assert_eq!((g.may_start_work(), g.may_replay()), (start, replay), "{g:?}");
        }
    }
}
