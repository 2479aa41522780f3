//! The server's clock: wall-clock seconds plus an offset that only tests (in process, or
//! through the `test-hooks` build's `/test/clock`) move. Everything the server says or checks
//! about time reads it: token and proof validation, nonces, the `Date` header.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Default)]
pub struct Clock(Arc<Inner>);

#[derive(Default)]
struct Inner {
    offset: AtomicI64,
    /// 0: running; otherwise the frozen wall-clock second.
    frozen: AtomicI64,
}

fn wall() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Clock {
    /// Unix seconds.
    pub fn now(&self) -> i64 {
        let frozen = self.0.frozen.load(Ordering::Relaxed);
        let secs = if frozen != 0 { frozen } else { wall() };
        secs + self.0.offset.load(Ordering::Relaxed)
    }

    /// Unix milliseconds (a frozen clock is at the start of its second).
    pub fn now_ms(&self) -> i64 {
        let offset = self.0.offset.load(Ordering::Relaxed).saturating_mul(1000);
        let frozen = self.0.frozen.load(Ordering::Relaxed);
        let ms = if frozen != 0 {
            frozen.saturating_mul(1000)
        } else {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        };
        ms.saturating_add(offset)
    }

    /// Stops the clock at the current second; `advance` still moves it.
    pub fn freeze(&self) {
        let now = self.now() - self.0.offset.load(Ordering::Relaxed);
        self.0.frozen.store(now, Ordering::Relaxed);
    }

    pub fn advance(&self, secs: i64) {
        self.0.offset.fetch_add(secs, Ordering::Relaxed);
    }

    pub fn reset(&self) {
        self.0.offset.store(0, Ordering::Relaxed);
        self.0.frozen.store(0, Ordering::Relaxed);
    }

    /// `now()` as an HTTP date (`Date`, RFC 9110).
    pub fn http_date(&self) -> String {
        let secs = u64::try_from(self.now()).unwrap_or(0);
        httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(secs))
    }
}
