//! Sessions this replica opened in the current second, keyed by the raw session cookie. A busy
//! application sends many checks per second for one browser; each would cost a Redis round trip
//! and two AEAD opens. Within the second they reuse the opened session; the store stays the
//! authority: a session is read from it again once the second (of the authenticator's clock)
//! changes, and a sign-out on this replica takes effect at once (`forget_ticket`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Most sessions kept by default; past it, new ones are not kept (they are read from the store
/// each time, as without this map).
const CAPACITY: usize = 10_000;

struct Entry<V> {
    ticket: String,
    value: Arc<V>,
    /// When it must no longer be used without the store (ID token due for refresh, login over).
    until: i64,
}

struct Second<V> {
    /// The second the entries were opened in; a new second starts an empty map.
    at: i64,
    entries: HashMap<String, Entry<V>>,
    /// Tickets signed out in this or the previous second: a check that read the store just
    /// before the sign-out deleted the session must not put it back here.
    signed_out: HashMap<String, i64>,
}

pub(crate) struct Recent<V> {
    state: Mutex<Second<V>>,
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
            state: Mutex::new(Second {
                at: i64::MIN,
                entries: HashMap::new(),
                signed_out: HashMap::new(),
            }),
            capacity,
        }
    }

    /// The session opened for exactly this cookie in the current second, if still usable.
    pub fn get(&self, cookie: &str, now: i64) -> Option<Arc<V>> {
        let state = self.state.lock().ok()?;
        if state.at != now {
            return None;
        }
        let e = state.entries.get(cookie)?;
        (now < e.until).then(|| e.value.clone())
    }

    pub fn put(&self, cookie: &str, ticket: &str, value: Arc<V>, now: i64, until: i64) {
        if self.capacity == 0 || until <= now {
            return;
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state.at != now {
            // Entries of an earlier second are never served again: drop them all at once.
            state.at = now;
            state.entries.clear();
            state.signed_out.retain(|_, at| now - *at <= 1);
        }
        if state.signed_out.contains_key(ticket) {
            return;
        }
        if state.entries.len() >= self.capacity && !state.entries.contains_key(cookie) {
            return;
        }
        state.entries.insert(
            cookie.to_owned(),
            Entry {
                ticket: ticket.to_owned(),
                value,
                until,
            },
        );
    }

    /// Sign-out: every cookie of this session (a refresh re-issues the cookie, so there may be
    /// several) stops being served from here, and for two seconds none is put back.
    pub fn forget_ticket(&self, ticket: &str, now: i64) {
        if let Ok(mut state) = self.state.lock() {
            state.entries.retain(|_, e| e.ticket != ticket);
            state.signed_out.retain(|_, at| now - *at <= 1);
            state.signed_out.insert(ticket.to_owned(), now);
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
        r.forget_ticket("t1", 100);
        assert_eq!(r.get("old", 100), None);
        assert_eq!(r.get("new", 100), None);
        assert_eq!(r.get("someone-else", 100).as_deref(), Some(&3));
    }

    #[test]
    fn a_check_racing_the_sign_out_does_not_put_the_session_back() {
        let r = Recent::default();
        r.forget_ticket("t1", 100);
        // A check that read the store before the delete finishes after the forget.
        r.put("cookie", "t1", Arc::new(1), 100, 1_000);
        assert_eq!(r.get("cookie", 100), None);
        r.put("cookie", "t1", Arc::new(1), 101, 1_000);
        assert_eq!(r.get("cookie", 101), None, "nor in the next second");
        // Two seconds later the store alone decides (it no longer has the session).
        r.put("cookie", "t1", Arc::new(1), 102, 1_000);
        assert_eq!(r.get("cookie", 102).as_deref(), Some(&1));
    }

    #[test]
    fn bounded_and_emptied_every_second() {
        let r = Recent::default();
        for i in 0..CAPACITY {
            r.put(&format!("c{i}"), "t", Arc::new(i), 100, 1_000);
        }
        r.put("one-too-many", "t", Arc::new(0), 100, 1_000);
        assert_eq!(r.get("one-too-many", 100), None, "not kept when full");
        // The next second starts empty.
        r.put("next-second", "t", Arc::new(1), 101, 1_000);
        assert_eq!(r.get("next-second", 101).as_deref(), Some(&1));
        assert_eq!(r.state.lock().unwrap().entries.len(), 1);
    }

    #[test]
    fn off_keeps_nothing() {
        let r = Recent::with_capacity(0);
        r.put("cookie", "t1", Arc::new(7), 100, 1_000);
        assert_eq!(r.get("cookie", 100), None);
    }
}
