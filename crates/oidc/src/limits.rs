//! The per-address limiter for failed logins and failed token requests. It lives in each replica
//! (addresses are spread over replicas by the load balancer anyway); the per-user bucket, which
//! must be exact across replicas, lives in storage (`Store::take`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Beyond this many tracked addresses, finished entries are pruned; if none are, new addresses
/// are not tracked (memory stays bounded under an address-spraying flood).
const MAX_TRACKED: usize = 100_000;

pub struct IpLimiter {
    burst: i64,
    interval: i64,
    /// GCRA: per address, when its bucket is full again.
    tats: Mutex<HashMap<IpAddr, i64>>,
}

impl IpLimiter {
    pub fn new(burst: u32, interval: i64) -> Self {
        Self {
            burst: i64::from(burst),
            interval,
            tats: Mutex::new(HashMap::new()),
        }
    }

    fn tolerance(&self) -> i64 {
        (self.burst - 1) * self.interval
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, i64>> {
        match self.tats.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Seconds this address must wait before it may fail again, if it is over the limit.
    pub fn blocked(&self, ip: IpAddr, now: i64) -> Option<i64> {
        let tat = (*self.lock().get(&ip)?).max(now);
        (tat - now > self.tolerance()).then(|| tat - now - self.tolerance())
    }

    /// Counts one failure against the address.
    pub fn record_failure(&self, ip: IpAddr, now: i64) {
        let mut tats = self.lock();
        if tats.len() >= MAX_TRACKED && !tats.contains_key(&ip) {
            tats.retain(|_, tat| *tat > now);
            if tats.len() >= MAX_TRACKED {
                return;
            }
        }
        let tat = tats.entry(ip).or_insert(now);
        *tat = (*tat).max(now) + self.interval;
    }

    /// Forgets addresses whose bucket is full again.
    pub fn prune(&self, now: i64) {
        self.lock().retain(|_, tat| *tat > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_one_per_interval() {
        let l = IpLimiter::new(3, 2);
        let ip: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..3 {
            assert_eq!(l.blocked(ip, 100), None);
            l.record_failure(ip, 100);
        }
        assert_eq!(l.blocked(ip, 100), Some(2));
        assert_eq!(l.blocked(ip, 101), Some(1));
        assert_eq!(l.blocked(ip, 102), None);
        l.record_failure(ip, 102);
        assert!(l.blocked(ip, 102).is_some());
        assert_eq!(
            l.blocked([10, 0, 0, 2].into(), 102),
            None,
            "addresses are independent"
        );
        l.prune(200);
        assert!(l.lock().is_empty());
    }
}
