//! Reconnect pacing: exponential backoff with jitter and a cap.
//!
//! Jitter matters on a site with many gateways: after a broker restart they
//! must not all reconnect in the same second.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next delay. `unit` is a random number in [0, 1): the delay is
    /// drawn from the upper half of the exponential step ("equal jitter"), so
    /// it never collapses to zero.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(20));
        let step = self.min.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let unit = unit.clamp(0.0, 1.0);
        step / 2 + step.mul_f64(unit / 2.0)
    }

    /// After a connection that worked, start again from the shortest delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_until_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(4));
        let tops: Vec<Duration> = (0..6).map(|_| b.next_delay(1.0)).collect();
        let ms: Vec<u128> = tops.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![500, 1000, 2000, 4000, 4000, 4000]);
    }

    #[test]
    fn jitter_stays_in_the_upper_half_of_the_step() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
        assert_eq!(b.next_delay(0.0), Duration::from_secs(1));
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        for _ in 0..5 {
            b.next_delay(1.0);
        }
        b.reset();
        assert_eq!(b.next_delay(1.0), Duration::from_millis(100));
    }
}
