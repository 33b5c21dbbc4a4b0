//! Leader election over a `coordination.k8s.io/v1` Lease, as a pure state machine. The
//! semantics are client-go's leader election, which Flux and Flagger use: a candidate
//! takes the lease when its holder has not renewed it for `leaseDurationSeconds`,
//! measured on the candidate's own clock from when it last saw the record change (so
//! clock skew between replicas does not matter); the holder renews every retry period
//! and stops acting as leader once it has failed to renew for the renew deadline, which
//! is shorter than the lease duration, so it stops writing before anyone else may start.
//! The executor reads and writes the Lease and asks this module what to do; nothing
//! here talks to the API server or reads a clock.

/// Timings, in seconds. client-go's (and Flux's) defaults are 15 s, 10 s and 2 s; with
/// those a standby that polls every 2 s can need 15 + 2 s after the holder's last renewal,
/// more than the 15 s takeover gitcanary promises. gitcanary's defaults are 10 s, 7 s and
/// 2 s: the standby sees the last renewal at most one retry period late and takes over one
/// lease duration after that, so within 12 s of the holder's death (plus a request's
/// latency), while a holder that cannot renew stops 3 s before anyone may take over.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// How long a lease stays valid without renewal.
    pub lease_duration: f64,
    /// How long the holder keeps acting after its last successful renewal.
    pub renew_deadline: f64,
    /// How often to try to acquire or renew.
    pub retry_period: f64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: 10.0,
            renew_deadline: 7.0,
            retry_period: 2.0,
        }
    }
}

/// The fields of a Lease's spec that election reads and writes.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseSpec {
    /// Who holds it; empty or absent when released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_identity: Option<String>,
    /// Validity in whole seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_duration_seconds: Option<u32>,
    /// When the current holder took it (RFC 3339 micro time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquire_time: Option<String>,
    /// When the holder last renewed it (RFC 3339 micro time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_time: Option<String>,
    /// How many times it changed hands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_transitions: Option<u32>,
}

/// What the executor does next.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Write this spec (create the Lease when absent, else update it at the read
    /// resourceVersion, so a concurrent writer makes the update fail), then report the
    /// outcome with [`Elector::written`].
    Write(LeaseSpec),
    /// Someone else holds a valid lease: try again after the retry period.
    Wait,
}

/// One candidate's view of the election.
#[derive(Clone, Debug)]
pub struct Elector {
    identity: String,
    timing: Timing,
    /// The last record seen and when (on this candidate's clock) it was first seen.
    observed: Option<(LeaseSpec, f64)>,
    /// When this candidate last wrote the lease successfully as its holder.
    renewed_at: Option<f64>,
}

impl Elector {
    /// A candidate named `identity` (e.g. the pod name).
    pub fn new(identity: impl Into<String>, timing: Timing) -> Elector {
        Elector {
            identity: identity.into(),
            timing,
            observed: None,
            renewed_at: None,
        }
    }

    /// Decides what to do with the lease as just read (`None` when it does not exist).
    /// `now` is this candidate's monotonic clock in seconds; `wall` is the RFC 3339 time
    /// to write into the record.
    pub fn decide(&mut self, lease: Option<&LeaseSpec>, now: f64, wall: &str) -> Action {
        let exists = lease.is_some();
        let lease = lease.cloned().unwrap_or_default();
        match &self.observed {
            Some((seen, _)) if *seen == lease => {}
            _ => self.observed = Some((lease.clone(), now)),
        }
        let seen_at = self.observed.as_ref().map_or(now, |(_, t)| *t);
        let holder = lease.holder_identity.clone().filter(|h| !h.is_empty());
        let duration = lease
            .lease_duration_seconds
            .map_or(self.timing.lease_duration, f64::from);
        let mine = holder.as_deref() == Some(self.identity.as_str());
        if !mine {
            // We may have lost it to a takeover while we thought we held it.
            self.renewed_at = None;
            if holder.is_some() && now < seen_at + duration {
                return Action::Wait;
            }
        }
        let transitions = lease.lease_transitions.unwrap_or(0);
        Action::Write(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.lease_duration.ceil() as u32),
            acquire_time: if mine {
                lease.acquire_time.clone()
            } else {
                Some(wall.to_string())
            },
            renew_time: Some(wall.to_string()),
            // client-go counts every change of holder of an existing record.
            lease_transitions: Some(if mine || !exists {
                transitions
            } else {
                transitions + 1
            }),
        })
    }

    /// Reports the outcome of the write [`decide`](Self::decide) asked for, made at `now`.
    pub fn written(&mut self, spec: &LeaseSpec, ok: bool, now: f64) {
        if ok {
            self.renewed_at = Some(now);
            self.observed = Some((spec.clone(), now));
        }
    }

    /// Whether this candidate may act as leader at `now`: it renewed within the renew
    /// deadline. Writes stop the moment this turns false, well before the lease expires.
    pub fn is_leader(&self, now: f64) -> bool {
        self.renewed_at
            .is_some_and(|t| now - t < self.timing.renew_deadline)
    }

    /// Until when (on this candidate's clock) it may act as leader, if it holds the lease:
    /// the executor's write gate keeps this instant, so writes stop on time even when the
    /// election loop itself is stuck in a request.
    pub fn leader_until(&self) -> Option<f64> {
        self.renewed_at.map(|t| t + self.timing.renew_deadline)
    }

    /// Gives the lease up on shutdown, as client-go's `ReleaseOnCancel`: when this
    /// candidate holds it, returns the record to write (no holder, a 1 s duration), so a
    /// standby takes over at its next retry instead of waiting out the lease. Either way
    /// this candidate stops being leader at once.
    pub fn release(&mut self, wall: &str) -> Option<LeaseSpec> {
        self.renewed_at.take()?;
        let (seen, _) = self.observed.as_ref()?;
        if seen.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return None;
        }
        Some(LeaseSpec {
            holder_identity: Some(String::new()),
            lease_duration_seconds: Some(1),
            acquire_time: Some(wall.to_string()),
            renew_time: Some(wall.to_string()),
            lease_transitions: seen.lease_transitions,
        })
    }

    /// The holder of the lease as last read or written, if any.
    pub fn holder(&self) -> Option<&str> {
        self.observed
            .as_ref()
            .and_then(|(s, _)| s.holder_identity.as_deref())
            .filter(|h| !h.is_empty())
    }

    /// The identity this candidate writes.
    pub fn identity(&self) -> &str {
        &self.identity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(who: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(who.into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some("t0".into()),
            renew_time: Some("t0".into()),
            lease_transitions: Some(0),
        }
    }

    fn write(a: Action) -> LeaseSpec {
        match a {
            Action::Write(s) => s,
            Action::Wait => panic!("expected a write"),
        }
    }

    #[test]
    fn first_candidate_creates_and_leads() {
        let mut a = Elector::new("a", Timing::default());
        let spec = write(a.decide(None, 0.0, "w0"));
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_transitions, Some(0));
        assert!(!a.is_leader(0.0), "not leader before the write succeeded");
        a.written(&spec, true, 0.1);
        assert!(a.is_leader(0.1));
    }

    #[test]
    fn standby_waits_while_the_holder_renews_and_takes_over_after_the_duration() {
        let mut b = Elector::new("b", Timing::default());
        let mut lease = held_by("a");
        assert_eq!(b.decide(Some(&lease), 100.0, "w"), Action::Wait);
        // The holder renews: the record changes, so b's observation restarts.
        lease.renew_time = Some("t1".into());
        assert_eq!(b.decide(Some(&lease), 110.0, "w"), Action::Wait);
        assert_eq!(b.decide(Some(&lease), 124.9, "w"), Action::Wait);
        // No renewal for 15 s of b's own clock: b takes it, counting a transition.
        let spec = write(b.decide(Some(&lease), 125.0, "w125"));
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.acquire_time.as_deref(), Some("w125"));
        assert_eq!(spec.lease_transitions, Some(1));
        b.written(&spec, true, 125.0);
        assert!(b.is_leader(125.0));
    }

    #[test]
    fn holder_renews_keeping_its_acquire_time() {
        let mut a = Elector::new("a", Timing::default());
        let spec = write(a.decide(Some(&held_by("a")), 5.0, "w5"));
        assert_eq!(spec.acquire_time.as_deref(), Some("t0"));
        assert_eq!(spec.renew_time.as_deref(), Some("w5"));
        assert_eq!(spec.lease_transitions, Some(0));
    }

    #[test]
    fn failed_renewals_stop_the_leader_before_the_lease_expires() {
        let t = Timing::default();
        let mut a = Elector::new("a", t);
        let spec = write(a.decide(None, 0.0, "w0"));
        a.written(&spec, true, 0.0);
        let mut now = t.retry_period;
        while now < t.renew_deadline {
            let s = write(a.decide(Some(&spec), now, "w"));
            a.written(&s, false, now);
            assert!(a.is_leader(now), "still within the renew deadline at {now}");
            now += t.retry_period;
        }
        assert!(!a.is_leader(t.renew_deadline));
        // A standby that saw the last successful write at 0 cannot take over before the
        // lease duration: the old leader stopped at the renew deadline, so there is
        // never a moment with two leaders.
        assert!(t.renew_deadline < t.lease_duration);
    }

    #[test]
    fn a_leader_that_sees_another_holder_stops_at_once() {
        let mut a = Elector::new("a", Timing::default());
        let spec = write(a.decide(None, 0.0, "w0"));
        a.written(&spec, true, 0.0);
        assert_eq!(a.decide(Some(&held_by("b")), 3.0, "w3"), Action::Wait);
        assert!(!a.is_leader(3.0));
    }

    #[test]
    fn default_timing_takes_over_within_15_seconds_and_stops_writes_first() {
        let t = Timing::default();
        // Worst case: the holder dies right after renewing; the standby sees that
        // renewal one retry period late and waits a full lease duration from there.
        assert!(t.lease_duration + t.retry_period < 15.0);
        assert!(t.renew_deadline + t.retry_period <= t.lease_duration);
        let mut b = Elector::new("b", t);
        let mut lease = held_by("a");
        lease.lease_duration_seconds = Some(t.lease_duration as u32);
        assert_eq!(b.decide(Some(&lease), 2.0, "w"), Action::Wait);
        assert_eq!(b.decide(Some(&lease), 10.0, "w"), Action::Wait);
        assert!(matches!(
            b.decide(Some(&lease), 12.0, "w"),
            Action::Write(_)
        ));
    }

    #[test]
    fn leader_until_is_the_last_renewal_plus_the_renew_deadline() {
        let t = Timing::default();
        let mut a = Elector::new("a", t);
        assert_eq!(a.leader_until(), None);
        let spec = write(a.decide(None, 3.0, "w3"));
        a.written(&spec, true, 3.0);
        assert_eq!(a.leader_until(), Some(3.0 + t.renew_deadline));
        assert_eq!(a.holder(), Some("a"));
    }

    #[test]
    fn release_clears_the_holder_and_a_standby_takes_it_at_once() {
        let mut a = Elector::new("a", Timing::default());
        let spec = write(a.decide(None, 0.0, "w0"));
        a.written(&spec, true, 0.0);
        let released = a.release("w5").expect("the holder releases");
        assert_eq!(released.holder_identity.as_deref(), Some(""));
        assert_eq!(released.lease_duration_seconds, Some(1));
        assert!(!a.is_leader(5.0));
        assert_eq!(a.release("w6"), None, "released once");
        let mut b = Elector::new("b", Timing::default());
        let taken = write(b.decide(Some(&released), 5.1, "w5.1"));
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
    }

    #[test]
    fn a_standby_has_nothing_to_release() {
        let mut b = Elector::new("b", Timing::default());
        assert_eq!(b.decide(Some(&held_by("a")), 1.0, "w"), Action::Wait);
        assert_eq!(b.release("w"), None);
        assert_eq!(b.holder(), Some("a"));
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let mut b = Elector::new("b", Timing::default());
        let mut lease = held_by("a");
        lease.holder_identity = Some(String::new());
        let spec = write(b.decide(Some(&lease), 1.0, "w1"));
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(1));
    }
}
