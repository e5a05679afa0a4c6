//! Time conversions. Canopy stores timestamps as i64 nanoseconds since the
//! Unix epoch (UTC), which covers the years 1677..2262.

use canopy_api::Timestamp;
use canopy_api::v1::{IntervalRule, interval_rule::Unit};

use crate::{ModelError, Result};

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// The wall clock, in nanoseconds since the Unix epoch (0 if the clock is
/// before 1970).
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// Converts a protobuf timestamp to nanoseconds, rejecting out-of-range values.
pub fn timestamp_to_nanos(ts: &Timestamp, field: &str) -> Result<i64> {
    if !(0..NANOS_PER_SEC as i32).contains(&ts.nanos) {
        return Err(ModelError::invalid(field, "nanos must be in 0..1e9"));
    }
    ts.seconds
        .checked_mul(NANOS_PER_SEC)
        .and_then(|s| s.checked_add(ts.nanos as i64))
        .ok_or_else(|| ModelError::invalid(field, "timestamp out of range (years 1677..2262)"))
}

/// Converts nanoseconds back to a protobuf timestamp.
pub fn nanos_to_timestamp(nanos: i64) -> Timestamp {
    Timestamp { seconds: nanos.div_euclid(NANOS_PER_SEC), nanos: nanos.rem_euclid(NANOS_PER_SEC) as i32 }
}

/// Longest interval a group may set (segment width or TTL): 100 years.
/// Timestamps span 1677..2262, so a longer one could only wrap or mean "forever".
pub const INTERVAL_NANOS_MAX: i64 = 100 * 365 * 86_400 * NANOS_PER_SEC;

/// Length of an interval rule in nanoseconds; refuses lengths beyond
/// [`INTERVAL_NANOS_MAX`] (checked arithmetic: a wrapped product would turn
/// a long TTL into a negative one, expiring everything).
pub fn interval_nanos(rule: Option<&IntervalRule>, field: &str) -> Result<i64> {
    let rule = rule.ok_or_else(|| ModelError::invalid(field, "required"))?;
    let (unit, per_unit) = match Unit::try_from(rule.unit) {
        Ok(Unit::Hour) => ("hours", 3600 * NANOS_PER_SEC),
        Ok(Unit::Day) => ("days", 86_400 * NANOS_PER_SEC),
        _ => {
            return Err(ModelError::invalid(format!("{field}.unit"), "must be UNIT_HOUR or UNIT_DAY"));
        }
    };
    if rule.num == 0 {
        return Err(ModelError::invalid(format!("{field}.num"), "must be at least 1"));
    }
    per_unit.checked_mul(rule.num as i64).filter(|n| *n <= INTERVAL_NANOS_MAX).ok_or_else(|| {
        ModelError::invalid(
            format!("{field}.num"),
            format!("{} {unit} is longer than the maximum of 100 years ({} {unit})", rule.num, INTERVAL_NANOS_MAX / per_unit),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_round_trip_including_pre_epoch() {
        for n in [0i64, 1, -1, 1_700_000_000_123_456_789, -5_000_000_001] {
            let ts = nanos_to_timestamp(n);
            assert_eq!(timestamp_to_nanos(&ts, "t").unwrap(), n);
        }
    }

    #[test]
    fn interval_requires_unit_and_num() {
        let day = IntervalRule { unit: Unit::Day as i32, num: 2 };
        assert_eq!(interval_nanos(Some(&day), "ttl").unwrap(), 2 * 86_400 * NANOS_PER_SEC);
        let zero = IntervalRule { unit: Unit::Day as i32, num: 0 };
        assert!(interval_nanos(Some(&zero), "ttl").unwrap_err().to_string().contains("ttl.num"));
        assert!(interval_nanos(None, "ttl").is_err());
    }

    #[test]
    fn intervals_longer_than_a_century_are_refused_not_wrapped() {
        // 200000 days wraps an i64 of nanoseconds to a negative length.
        let long = IntervalRule { unit: Unit::Day as i32, num: 200_000 };
        let err = interval_nanos(Some(&long), "group.resource_opts.ttl").unwrap_err().to_string();
        assert!(err.contains("group.resource_opts.ttl.num") && err.contains("100 years"), "{err}");
        let max_hours = IntervalRule { unit: Unit::Hour as i32, num: u32::MAX };
        assert!(interval_nanos(Some(&max_hours), "segment_interval").is_err());
        let century = IntervalRule { unit: Unit::Day as i32, num: 36_500 };
        assert_eq!(interval_nanos(Some(&century), "ttl").unwrap(), INTERVAL_NANOS_MAX);
        let over = IntervalRule { unit: Unit::Day as i32, num: 36_501 };
        assert!(interval_nanos(Some(&over), "ttl").is_err());
    }
}
