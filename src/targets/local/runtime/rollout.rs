//! The rolling-update decision, as the Deployment controller makes it: start pods of
//! the new template while the total stays within `replicas + maxSurge`, stop old pods
//! while at least `replicas - maxUnavailable` stay available. Pure.

use super::spec::Strategy;

/// What the decision sees of one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    /// Pod name.
    pub name: String,
    /// Its template hash.
    pub hash: String,
    /// Ready (and past `minReadySeconds`).
    pub available: bool,
}

/// One step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Start a pod of the current template.
    Start,
    /// Stop this pod.
    Stop(String),
}

/// The steps to take now toward `replicas` pods of template `hash`.
pub fn decide(replicas: u32, hash: &str, strategy: Strategy, pods: &[PodView]) -> Vec<Step> {
    let (new, old): (Vec<&PodView>, Vec<&PodView>) = pods.iter().partition(|p| p.hash == hash);
    let mut steps = Vec::new();
    let replicas = replicas as usize;
    match strategy {
        Strategy::Recreate => {
            if !old.is_empty() {
                return old.iter().map(|p| Step::Stop(p.name.clone())).collect();
            }
            for _ in new.len()..replicas {
                steps.push(Step::Start);
            }
            for p in new.iter().skip(replicas) {
                steps.push(Step::Stop(p.name.clone()));
            }
        }
        Strategy::Rolling {
            max_surge,
            max_unavailable,
        } => {
            let max_total = replicas + max_surge as usize;
            let min_available = replicas.saturating_sub(max_unavailable as usize);
            // Scale the new template up, within the surge budget.
            let room = max_total.saturating_sub(new.len() + old.len());
            let want = replicas.saturating_sub(new.len());
            for _ in 0..room.min(want) {
                steps.push(Step::Start);
            }
            // Too many of the new template: stop the surplus, unavailable first.
            if new.len() > replicas {
                let mut surplus: Vec<&&PodView> = new.iter().collect();
                surplus.sort_by_key(|p| p.available);
                for p in surplus.into_iter().take(new.len() - replicas) {
                    steps.push(Step::Stop(p.name.clone()));
                }
            }
            // Stop old pods: unavailable ones always, available ones while enough stay.
            let mut available = pods.iter().filter(|p| p.available).count();
            let mut old_sorted: Vec<&&PodView> = old.iter().collect();
            old_sorted.sort_by_key(|p| p.available);
            let new_planned = new.len() + steps.iter().filter(|s| **s == Step::Start).count();
            let mut total = new_planned + old.len();
            for p in old_sorted {
                let excess = total > replicas || new_planned >= replicas;
                if !p.available {
                    steps.push(Step::Stop(p.name.clone()));
                    total -= 1;
                } else if available > min_available && excess {
                    steps.push(Step::Stop(p.name.clone()));
                    available -= 1;
                    total -= 1;
                }
            }
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, hash: &str, available: bool) -> PodView {
        PodView {
            name: name.into(),
            hash: hash.into(),
            available,
        }
    }

    fn starts(s: &[Step]) -> usize {
        s.iter().filter(|x| **x == Step::Start).count()
    }

    #[test]
    fn scale_up_from_nothing() {
        let s = decide(
            3,
            "h",
            Strategy::Rolling {
                max_surge: 1,
                max_unavailable: 0,
            },
            &[],
        );
        assert_eq!(starts(&s), 3);
    }

    #[test]
    fn rolling_with_max_unavailable_zero_never_drops_below_replicas() {
        let rolling = Strategy::Rolling {
            max_surge: 1,
            max_unavailable: 0,
        };
        let old = vec![pod("a", "old", true), pod("b", "old", true)];
        // Start one surge pod, stop nothing yet.
        assert_eq!(decide(2, "new", rolling, &old), vec![Step::Start]);
        // Surge pod not ready: wait.
        let mut pods = old.clone();
        pods.push(pod("c", "new", false));
        assert!(decide(2, "new", rolling, &pods).is_empty());
        // Surge pod ready: one old may go.
        pods[2].available = true;
        assert_eq!(
            decide(2, "new", rolling, &pods),
            vec![Step::Stop("a".into())]
        );
    }

    #[test]
    fn scale_down_and_recreate() {
        let rolling = Strategy::Rolling {
            max_surge: 1,
            max_unavailable: 1,
        };
        let pods = vec![
            pod("a", "h", true),
            pod("b", "h", false),
            pod("c", "h", true),
        ];
        assert_eq!(decide(2, "h", rolling, &pods), vec![Step::Stop("b".into())]);
        let pods = vec![pod("a", "old", true)];
        assert_eq!(
            decide(1, "new", Strategy::Recreate, &pods),
            vec![Step::Stop("a".into())]
        );
        assert_eq!(decide(1, "new", Strategy::Recreate, &[]), vec![Step::Start]);
        assert_eq!(
            decide(0, "h", rolling, &[pod("a", "h", true)]),
            vec![Step::Stop("a".into())]
        );
    }
}
