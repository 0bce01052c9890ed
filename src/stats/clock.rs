//! The clock of the statistics: microseconds on the monotonic clock as a plain `u64`, so a
//! duration is one subtraction. (`Instant` arithmetic normalises seconds and nanoseconds on
//! every step and `Duration::as_micros` divides a 128-bit number: seven of those per
//! transaction cost more than the clock reads themselves.)

/// Microseconds since an arbitrary moment (the monotonic clock's origin, boot on Linux);
/// never 0, so 0 can mean "not started".
#[inline]
pub fn now_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC always exists on Linux and
    // macOS, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_with_std_instant() {
        let (a, std_a) = (now_us(), std::time::Instant::now());
        std::thread::sleep(std::time::Duration::from_millis(5));
        let (b, std_b) = (now_us(), std_a.elapsed());
        let us = b - a;
        // Both clocks are CLOCK_MONOTONIC: the differences agree to within the reads' gap.
        assert!(us >= 5_000, "{us}");
        assert!(
            us.abs_diff(std_b.as_micros() as u64) < 2_000,
            "{us} vs {std_b:?}"
        );
    }
}
