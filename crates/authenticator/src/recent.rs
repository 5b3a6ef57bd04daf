//! Sessions this replica opened in the current second, keyed by the raw session cookie. A busy
//! application sends many checks per second for one browser; each would cost a Redis round trip
//! and two AEAD opens. Within the second they reuse the opened session; the store stays the
//! authority: a session is re-read from it once the second (of the authenticator's clock) changes,
//! so a sign-out on another replica takes effect here within a second, and one on this replica at
//! once (`forget_ticket`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Most sessions kept by default; past it, entries from earlier seconds are dropped, and if the map is still
/// full the new one is not kept (it is then read from the store each time, as without this map).
const CAPACITY: usize = 10_000;

struct Entry<V> {
    ticket: String,
    value: Arc<V>,
    /// The second it was opened.
    at: i64,
    /// When it must no longer be used without the store (ID token due for refresh, login over).
    until: i64,
}

pub(crate) struct Recent<V> {
    entries: Mutex<HashMap<String, Entry<V>>>,
    capacity: usize,
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl<V> Recent<V> {
    /// `0`: nothing is kept, every check reads the store (`sessionStore.cache: false`).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The session opened for exactly this cookie in the current second, if still usable.
    pub fn get(&self, cookie: &str, now: i64) -> Option<Arc<V>> {
        let entries = self.entries.lock().ok()?;
        let e = entries.get(cookie)?;
        (e.at == now && now < e.until).then(|| e.value.clone())
    }

    pub fn put(&self, cookie: &str, ticket: &str, value: Arc<V>, now: i64, until: i64) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.capacity && !entries.contains_key(cookie) {
            entries.retain(|_, e| e.at == now);
            if entries.len() >= self.capacity {
                return;
            }
        }
        entries.insert(
            cookie.to_owned(),
            Entry {
                ticket: ticket.to_owned(),
                value,
                at: now,
                until,
            },
        );
    }

    /// Sign-out: every cookie of this session (a refresh re-issues the cookie, so there may be
    /// several) stops being served from here.
    pub fn forget_ticket(&self, ticket: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, e| e.ticket != ticket);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn served_within_the_second_then_read_again() {
        let r = Recent::default();
        r.put("cookie", "t1", Arc::new(7), 100, 1_000);
        assert_eq!(r.get("cookie", 100).as_deref(), Some(&7));
        assert_eq!(r.get("other-cookie", 100), None);
        assert_eq!(
            r.get("cookie", 101),
            None,
            "the next second reads the store"
        );
    }

    #[test]
    fn never_past_until() {
        let r = Recent::default();
        r.put("cookie", "t1", Arc::new(7), 100, 100);
        assert_eq!(r.get("cookie", 100), None);
    }

    #[test]
    fn sign_out_forgets_every_cookie_of_the_session() {
        let r = Recent::default();
        r.put("old", "t1", Arc::new(1), 100, 1_000);
        r.put("new", "t1", Arc::new(2), 100, 1_000);
        r.put("someone-else", "t2", Arc::new(3), 100, 1_000);
        r.forget_ticket("t1");
        assert_eq!(r.get("old", 100), None);
        assert_eq!(r.get("new", 100), None);
        assert_eq!(r.get("someone-else", 100).as_deref(), Some(&3));
    }

    #[test]
    fn bounded() {
        let r = Recent::default();
        for i in 0..CAPACITY {
            r.put(&format!("c{i}"), "t", Arc::new(i), 100, 1_000);
        }
        r.put("one-too-many", "t", Arc::new(0), 100, 1_000);
        assert_eq!(r.get("one-too-many", 100), None, "not kept when full");
        // Entries of an earlier second make room.
        r.put("next-second", "t", Arc::new(1), 101, 1_000);
        assert_eq!(r.get("next-second", 101).as_deref(), Some(&1));
        assert_eq!(r.entries.lock().unwrap().len(), 1);
    }

    #[test]
    fn off_keeps_nothing() {
        let r = Recent::with_capacity(0);
        r.put("cookie", "t1", Arc::new(7), 100, 1_000);
        assert_eq!(r.get("cookie", 100), None);
    }
}
