//! Stored responses: what `previous_response_id` continues from and `GET /v1/responses/{id}`
//! returns. Kept in memory, the oldest dropped first beyond `--max-stored-responses`; a
//! server restart forgets them. The conversation's KV is not kept here: a follow-up's prompt
//! extends the stored conversation, so the engine's prefix reuse finds it (issue 3's
//! client-side retention) as long as its policy still holds it.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use serde_json::Value;

/// One stored response.
pub struct Stored {
    /// The response object as it was returned.
    pub response: Value,
    /// The conversation it ended, as chat messages without the instructions: the previous
    /// response's conversation, this request's input and this response's output.
    pub history: Vec<Value>,
}

/// Where a response goes once finished: the store, with the conversation before its output.
pub struct StoreTo {
    pub store: Arc<ResponseStore>,
    pub history: Vec<Value>,
}

impl StoreTo {
    /// Stores `response` with the conversation extended by `output` (its chat messages).
    pub fn save(mut self, id: String, response: Value, output: Vec<Value>) {
        self.history.extend(output);
        let stored = Stored {
            response,
            history: self.history,
        };
        self.store.put(id, stored);
    }
}

pub struct ResponseStore {
    /// `None`: storing is off (`--max-stored-responses 0`).
    map: Option<Mutex<LruCache<String, Arc<Stored>>>>,
}

impl ResponseStore {
    pub fn new(capacity: usize) -> Self {
        let map = NonZeroUsize::new(capacity).map(|n| Mutex::new(LruCache::new(n)));
        Self { map }
    }

    pub fn put(&self, id: String, stored: Stored) {
        if let Some(m) = &self.map {
            lock(m).put(id, Arc::new(stored));
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Stored>> {
        self.map.as_ref().and_then(|m| lock(m).get(id).cloned())
    }

    pub fn remove(&self, id: &str) -> bool {
        self.map.as_ref().is_some_and(|m| lock(m).pop(id).is_some())
    }
}

/// The map stays usable even if a thread panicked while holding it: every operation on it
/// is a single insert, lookup or removal.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(n: i64) -> Stored {
        Stored {
            response: json!({"n": n}),
            history: vec![],
        }
    }

    #[test]
    fn keeps_the_newest_up_to_its_capacity() {
        let s = ResponseStore::new(2);
        s.put("a".into(), stored(1));
        s.put("b".into(), stored(2));
        s.put("c".into(), stored(3));
        assert!(s.get("a").is_none());
        assert_eq!(s.get("c").unwrap().response["n"], 3);
        assert!(s.remove("b"));
        assert!(!s.remove("b"));
    }

    #[test]
    fn capacity_zero_stores_nothing() {
        let s = ResponseStore::new(0);
        s.put("a".into(), stored(1));
        assert!(s.get("a").is_none());
    }
}
