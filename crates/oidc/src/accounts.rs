//! Account state kept in storage: failed-login streaks and the `passwordPolicy.lockout` lock,
//! administrator locks, and the first sighting of a user for `User.spec.ttl`.

use keygate_config::StaticUser;
use keygate_store::model::UserState;
use keygate_store::{Store, StoreError, UpdateError};

pub const LOCKOUT_REASON: &str = "PasswordPolicyLockout";
pub const ADMIN_REASON: &str = "LockedByAdministrator";

/// Resolves `spec.ttl` for users whose manifest gives no start: the TTL counts from the first
/// time Keygate saw the user, recorded once in storage (as Deckhouse sets `expireAt` once).
pub async fn resolve_expiry(
    store: &Store,
    connector_id: &str,
    users: &[StaticUser],
    now: i64,
) -> Result<Vec<StaticUser>, StoreError> {
    let mut out = Vec::with_capacity(users.len());
    for u in users {
        let mut u = u.clone();
        if let (None, Some(ttl)) = (u.expires_at, u.ttl) {
            let first_seen =
                first_seen(store, &UserState::id_for(connector_id, &u.name), now).await?;
            u.expires_at = Some(first_seen.saturating_add(ttl));
        }
        out.push(u);
    }
    Ok(out)
}

/// Like [`resolve_expiry`], without recording a first sighting (for listings: looking must not
/// start anyone's clock). Users never seen keep `expires_at: None`.
pub async fn expiry_view(
    store: &Store,
    connector_id: &str,
    users: &[StaticUser],
) -> Result<Vec<StaticUser>, StoreError> {
    let mut out = Vec::with_capacity(users.len());
    for u in users {
        let mut u = u.clone();
        if let (None, Some(ttl)) = (u.expires_at, u.ttl)
            && let Some(s) = store
                .get::<UserState>(&UserState::id_for(connector_id, &u.name))
                .await?
        {
            u.expires_at = Some(s.first_seen.saturating_add(ttl));
        }
        out.push(u);
    }
    Ok(out)
}

async fn first_seen(store: &Store, id: &str, now: i64) -> Result<i64, StoreError> {
    if let Some(s) = store.get::<UserState>(id).await? {
        return Ok(s.first_seen);
    }
    match store.create(&UserState::new(id.to_owned(), now)).await {
        Ok(()) => Ok(now),
        Err(StoreError::AlreadyExists) => Ok(store
            .get::<UserState>(id)
            .await?
            .map_or(now, |s| s.first_seen)),
        Err(e) => Err(e),
    }
}

/// Applies `update` to the user's state, creating it first if needed.
async fn upsert(
    store: &Store,
    id: &str,
    now: i64,
    update: impl Fn(&mut UserState) + Send + Sync,
) -> Result<UserState, StoreError> {
    loop {
        let result = store
            .update::<UserState, (), _>(id, |mut s| {
                update(&mut s);
                Ok(s)
            })
            .await;
        match result {
            Ok(s) => return Ok(s),
            Err(UpdateError::NotFound) => {
                let mut fresh = UserState::new(id.to_owned(), now);
                update(&mut fresh);
                match store.create(&fresh).await {
                    Ok(()) => return Ok(fresh),
                    Err(StoreError::AlreadyExists) => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(UpdateError::Store(e)) => return Err(e),
            Err(UpdateError::Rejected(())) => {
                return Err(StoreError::Backend("unreachable refusal".into()));
            }
        }
    }
}

/// One more failed password; with a lockout policy, the user is locked after `max_attempts` in a
/// row. Returns the new state.
pub async fn record_failure(
    store: &Store,
    id: &str,
    now: i64,
    lockout: Option<keygate_config::Lockout>,
) -> Result<UserState, StoreError> {
    upsert(store, id, now, |s| {
        if s.locked_at(now) {
            return;
        }
        s.failed_streak += 1;
        if let Some(l) = lockout
            && s.failed_streak >= l.max_attempts
        {
            s.failed_streak = 0;
            s.locked_until = Some(now.saturating_add(l.lock_duration));
            s.lock_reason = Some(LOCKOUT_REASON.into());
        }
    })
    .await
}

/// A successful login ends the streak.
pub async fn record_success(store: &Store, id: &str) -> Result<(), StoreError> {
    let result = store
        .update::<UserState, (), _>(id, |mut s| {
            if s.failed_streak == 0 {
                return Err(());
            }
            s.failed_streak = 0;
            Ok(s)
        })
        .await;
    match result {
        Ok(_) | Err(UpdateError::NotFound) | Err(UpdateError::Rejected(())) => Ok(()),
        Err(UpdateError::Store(e)) => Err(e),
    }
}

/// Locks a user until `until` (`None`: until unlocked).
pub async fn lock(
    store: &Store,
    id: &str,
    now: i64,
    until: Option<i64>,
) -> Result<UserState, StoreError> {
    upsert(store, id, now, |s| {
        s.locked_until = Some(until.unwrap_or(i64::MAX));
        s.lock_reason = Some(ADMIN_REASON.into());
    })
    .await
}

pub async fn unlock(store: &Store, id: &str, now: i64) -> Result<UserState, StoreError> {
    upsert(store, id, now, |s| {
        s.locked_until = None;
        s.lock_reason = None;
        s.failed_streak = 0;
    })
    .await
}
