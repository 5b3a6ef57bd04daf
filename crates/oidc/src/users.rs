//! The local password connector: static users from `User` manifests.

use std::collections::HashMap;
use std::sync::Arc;

use keygate_config::StaticUser;
use keygate_store::model::Identity;

use crate::hashing::HashingPool;

/// What a password check found. Unknown users and wrong passwords are indistinguishable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginResult {
    Ok(Identity),
    Invalid,
    /// The password could not be checked (no hashing thread): not the user's fault.
    Unavailable,
}

pub struct UserDirectory {
    by_email: HashMap<String, Arc<StaticUser>>,
    by_name: HashMap<String, Arc<StaticUser>>,
    /// Verified when the login names no user, so that the answer takes as long as a real check.
    dummy_hash: String,
    /// Bounded, lower-priority threads for bcrypt, so that a login storm leaves CPU for every
    /// other endpoint.
    hashing: HashingPool,
}

/// How many bcrypt checks may run at once: all cores but one (at least one).
pub fn default_hashing_permits() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

impl UserDirectory {
    pub fn new(users: &[StaticUser], hashing_permits: usize) -> Self {
        let mut by_email = HashMap::new();
        let mut by_name = HashMap::new();
        let mut max_cost = keygate_config::MIN_BCRYPT_COST;
        for u in users {
            let u = Arc::new(u.clone());
            max_cost = max_cost.max(u.password.cost());
            by_email.insert(u.email.clone(), u.clone());
            by_name.insert(u.name.clone(), u);
        }
        // A hash of a random password at the highest cost in use.
        let dummy_hash = bcrypt::hash(crate::random_id(16), max_cost).unwrap_or_else(|_| {
            "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W".into()
        });
        Self {
            by_email,
            by_name,
            dummy_hash,
            hashing: HashingPool::new(hashing_permits),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The user a login names (its email, case-insensitive).
    pub fn lookup(&self, login: &str) -> Option<Arc<StaticUser>> {
        self.by_email.get(&login.trim().to_lowercase()).cloned()
    }

    /// Checks a login (the email, case-insensitive) and password. Runs bcrypt off the async
    /// workers, on `hashing_permits` threads. Expired users are refused like wrong passwords.
    pub async fn check_password(&self, login: &str, password: &str, now: i64) -> LoginResult {
        let user = self.lookup(login);
        let hash = user.as_ref().map_or_else(
            || self.dummy_hash.clone(),
            |u| u.password.as_str().to_owned(),
        );
        let password = password.to_owned();
        let Some(matched) = self
            .hashing
            .run(move || !password.is_empty() && bcrypt::verify(password, &hash).unwrap_or(false))
            .await
        else {
            return LoginResult::Unavailable;
        };
        match user {
            Some(u) if matched && u.expires_at.is_none_or(|e| now < e) => {
                LoginResult::Ok(identity(&u))
            }
            _ => LoginResult::Invalid,
        }
    }

    /// The current identity of a user, for refreshes: `None` when deleted or expired.
    pub fn current(&self, user_id: &str, now: i64) -> Option<Identity> {
        self.by_name
            .get(user_id)
            .filter(|u| u.expires_at.is_none_or(|e| now < e))
            .map(|u| identity(u))
    }
}

fn identity(u: &StaticUser) -> Identity {
    Identity {
        user_id: u.name.clone(),
        username: u.name.clone(),
        preferred_username: u.name.clone(),
        email: u.email.clone(),
        email_verified: true,
        groups: u.groups.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_hashing_thread_is_not_a_wrong_password() {
        let mut users = UserDirectory::new(&[], 1);
        assert_eq!(
            users.check_password("nobody@example.com", "pw", 0).await,
            LoginResult::Invalid
        );
        users.hashing = HashingPool::closed();
        assert_eq!(
            users.check_password("nobody@example.com", "pw", 0).await,
            LoginResult::Unavailable
        );
    }
}
