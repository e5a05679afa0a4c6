//! Aggregation states that merge: each shard computes a partial state per
//! group, the liaison merges them (mean travels as sum + count).

use canopy_api::v1::AggregationFunction;

use crate::exact_sum::ExactSum;
use crate::value::FieldVal;

/// A supported aggregation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunction {
    Sum,
    Mean,
    Min,
    Max,
    Count,
    Last,
    First,
}

impl AggFunction {
    /// Converts from the API enum; `None` for unspecified values.
    pub fn from_proto(v: i32) -> Option<AggFunction> {
        match AggregationFunction::try_from(v).ok()? {
            AggregationFunction::Sum => Some(AggFunction::Sum),
            AggregationFunction::Mean => Some(AggFunction::Mean),
            AggregationFunction::Min => Some(AggFunction::Min),
            AggregationFunction::Max => Some(AggFunction::Max),
            AggregationFunction::Count => Some(AggFunction::Count),
            AggregationFunction::Last => Some(AggFunction::Last),
            AggregationFunction::First => Some(AggFunction::First),
            AggregationFunction::Unspecified => None,
        }
    }
}

/// Partial aggregate of one group over the non-null numeric values seen.
/// Integer fields are summed exactly in `i128`, float fields exactly in an
/// [`ExactSum`]: the answer does not depend on the order values arrive in.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AggState {
    pub count: u64,
    pub sum_int: i128,
    pub sum_float: ExactSum,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub min_int: Option<i64>,
    pub max_int: Option<i64>,
    /// The value with the latest timestamp, and the earliest.
    pub last: Option<(i64, FieldVal)>,
    pub first: Option<(i64, FieldVal)>,
}

/// True if `(ts, v)` should replace `cur`: the later (or earlier) timestamp
/// wins; equal timestamps keep the larger value, so the outcome does not
/// depend on the order values arrive or partial states merge in.
fn beats(cur: &Option<(i64, FieldVal)>, ts: i64, v: &FieldVal, later: bool) -> bool {
    match cur {
        None => true,
        Some((t, old)) => {
            let by_time = if later { ts.cmp(t) } else { t.cmp(&ts) };
            // Values that compare equal as numbers (strings, huge ints) fall
            // back to their encoding: a total order, so no arrival order shows.
            let by_value = v.as_f64().unwrap_or(f64::MIN).total_cmp(&old.as_f64().unwrap_or(f64::MIN)).then_with(|| {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                v.encode(&mut a);
                old.encode(&mut b);
                a.cmp(&b)
            });
            by_time.then(by_value).is_gt()
        }
    }
}

impl AggState {
    /// Folds one value at time `ts` in; nulls are skipped, and non-numeric
    /// values count only for last/first.
    pub fn add(&mut self, v: &FieldVal, ts: i64) {
        if !matches!(v, FieldVal::Null) {
            // Clone only when the value replaces the current one (the hot path
            // of LAST/FIRST scans sees mostly non-winning values).
            if beats(&self.last, ts, v, true) {
                self.last = Some((ts, v.clone()));
            }
            if beats(&self.first, ts, v, false) {
                self.first = Some((ts, v.clone()));
            }
        }
        match v {
            FieldVal::Int(i) => {
                self.count += 1;
                self.sum_int += *i as i128;
                self.min_int = Some(self.min_int.map_or(*i, |m| m.min(*i)));
                self.max_int = Some(self.max_int.map_or(*i, |m| m.max(*i)));
            }
            FieldVal::Float(f) => {
                self.count += 1;
                self.sum_float.add(*f);
                self.min = Some(self.min.map_or(*f, |m| m.min(*f)));
                self.max = Some(self.max.map_or(*f, |m| m.max(*f)));
            }
            _ => {}
        }
    }

    /// Folds non-null floats at strictly increasing timestamps, in one pass
    /// over plain slices, for function `f`: the same state as adding them one
    /// at a time, except that the (costly) exact sum is kept only for sum
    /// and mean — a state is only ever finished with its query's function.
    pub fn add_floats(&mut self, f: AggFunction, ts: &[i64], vals: &[f64]) {
        debug_assert_eq!(ts.len(), vals.len());
        let (Some(&first), Some(&last)) = (vals.first(), vals.last()) else { return };
        self.count += vals.len() as u64;
        if matches!(f, AggFunction::Sum | AggFunction::Mean) {
            self.sum_float.add_all(vals);
        }
        let (mut lo, mut hi) = (self.min.unwrap_or(first), self.max.unwrap_or(first));
        for &v in vals {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        (self.min, self.max) = (Some(lo), Some(hi));
        self.ends(ts, FieldVal::Float(first), FieldVal::Float(last));
    }

    /// Folds non-null integers at strictly increasing timestamps, like
    /// [`AggState::add_floats`].
    pub fn add_ints(&mut self, ts: &[i64], vals: &[i64]) {
        debug_assert_eq!(ts.len(), vals.len());
        let (Some(&first), Some(&last)) = (vals.first(), vals.last()) else { return };
        self.count += vals.len() as u64;
        let (mut lo, mut hi) = (self.min_int.unwrap_or(first), self.max_int.unwrap_or(first));
        let mut sum = 0i128;
        for &v in vals {
            sum += v as i128;
            lo = lo.min(v);
            hi = hi.max(v);
        }
        self.sum_int += sum;
        (self.min_int, self.max_int) = (Some(lo), Some(hi));
        self.ends(ts, FieldVal::Int(first), FieldVal::Int(last));
    }

    /// Offers a run's first and last values (at its first and last
    /// timestamps) to `first` and `last`: within a run of increasing
    /// timestamps no other value can win.
    fn ends(&mut self, ts: &[i64], first: FieldVal, last: FieldVal) {
        let (t0, t1) = (ts[0], ts[ts.len() - 1]);
        if beats(&self.last, t1, &last, true) {
            self.last = Some((t1, last));
        }
        if beats(&self.first, t0, &first, false) {
            self.first = Some((t0, first));
        }
    }

    /// Merges another partial state of the same group.
    pub fn merge(&mut self, o: &AggState) {
        self.count += o.count;
        self.sum_int += o.sum_int;
        self.sum_float.merge(&o.sum_float);
        self.min = min_opt(self.min, o.min, f64::min);
        self.max = min_opt(self.max, o.max, f64::max);
        self.min_int = min_opt(self.min_int, o.min_int, i64::min);
        self.max_int = min_opt(self.max_int, o.max_int, i64::max);
        if let Some((t, v)) = &o.last
            && beats(&self.last, *t, v, true)
        {
            self.last = Some((*t, v.clone()));
        }
        if let Some((t, v)) = &o.first
            && beats(&self.first, *t, v, false)
        {
            self.first = Some((*t, v.clone()));
        }
    }

    /// The final value. Integer-only input keeps integer results for sum, min
    /// and max; mean is always a float; an empty group gives null.
    pub fn finish(&self, f: AggFunction) -> FieldVal {
        let any_float = self.min.is_some();
        let any_int = self.min_int.is_some();
        match f {
            AggFunction::Count => FieldVal::Int(self.count as i64),
            AggFunction::Last => self.last.as_ref().map(|(_, v)| v.clone()).unwrap_or_default(),
            AggFunction::First => self.first.as_ref().map(|(_, v)| v.clone()).unwrap_or_default(),
            _ if self.count == 0 => FieldVal::Null,
            AggFunction::Sum if !any_float => FieldVal::Int(self.sum_int.clamp(i64::MIN as i128, i64::MAX as i128) as i64),
            AggFunction::Sum => FieldVal::Float(self.exact_total()),
            AggFunction::Mean => FieldVal::Float(self.exact_total() / self.count as f64),
            AggFunction::Min if !any_float => FieldVal::Int(self.min_int.expect("count > 0")),
            AggFunction::Max if !any_float => FieldVal::Int(self.max_int.expect("count > 0")),
            AggFunction::Min => {
                FieldVal::Float(min_opt(self.min, self.min_int.filter(|_| any_int).map(|i| i as f64), f64::min).expect("some"))
            }
            AggFunction::Max => {
                FieldVal::Float(min_opt(self.max, self.max_int.filter(|_| any_int).map(|i| i as f64), f64::max).expect("some"))
            }
        }
    }
}

impl AggState {
    /// Float and integer sums together, rounded once.
    fn exact_total(&self) -> f64 {
        if self.sum_int == 0 {
            return self.sum_float.value();
        }
        let mut s = self.sum_float.clone();
        s.add_int(self.sum_int);
        s.value()
    }
}

fn min_opt<T: Copy>(a: Option<T>, b: Option<T>, f: impl Fn(T, T) -> T) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_partials_equal_one_pass() {
        let vals: Vec<FieldVal> = (1..=10).map(|i| FieldVal::Float(i as f64 * 1.5)).collect();
        let mut whole = AggState::default();
        vals.iter().enumerate().for_each(|(i, v)| whole.add(v, i as i64));
        let (mut a, mut b) = (AggState::default(), AggState::default());
        vals[..3].iter().enumerate().for_each(|(i, v)| a.add(v, i as i64));
        vals[3..].iter().enumerate().for_each(|(i, v)| b.add(v, 3 + i as i64));
        b.merge(&a);
        a = b;
        for f in [
            AggFunction::Sum,
            AggFunction::Mean,
            AggFunction::Min,
            AggFunction::Max,
            AggFunction::Count,
            AggFunction::Last,
            AggFunction::First,
        ] {
            assert_eq!(a.finish(f), whole.finish(f), "{f:?}");
        }
        // And both equal what the values say, worked out by hand: 1.5 x (1..=10).
        let want = [
            (AggFunction::Sum, FieldVal::Float(82.5)),
            (AggFunction::Mean, FieldVal::Float(8.25)),
            (AggFunction::Min, FieldVal::Float(1.5)),
            (AggFunction::Max, FieldVal::Float(15.0)),
            (AggFunction::Count, FieldVal::Int(10)),
            (AggFunction::Last, FieldVal::Float(15.0)),
            (AggFunction::First, FieldVal::Float(1.5)),
        ];
        for (f, v) in want {
            assert_eq!(whole.finish(f), v, "{f:?}");
        }
    }

    #[test]
    fn slices_fold_like_single_values() {
        let ts: Vec<i64> = (0..50).map(|i| i * 10).collect();
        let floats: Vec<f64> = (0..50).map(|i| ((i * 37) % 11) as f64 * 0.3 - 1.0).collect();
        let ints: Vec<i64> = (0..50).map(|i| (i * 37) % 11 - 5).collect();
        let (mut one, mut run) = (AggState::default(), AggState::default());
        one.add(&FieldVal::Float(9.0), 5);
        run.add(&FieldVal::Float(9.0), 5);
        ts.iter().zip(&floats).for_each(|(&t, &v)| one.add(&FieldVal::Float(v), t));
        run.add_floats(AggFunction::Sum, &ts[..20], &floats[..20]);
        run.add_floats(AggFunction::Mean, &ts[20..], &floats[20..]);
        assert_eq!(one, run);
        let mut max_only = AggState::default();
        max_only.add(&FieldVal::Float(9.0), 5);
        max_only.add_floats(AggFunction::Max, &ts, &floats);
        assert_eq!(max_only.finish(AggFunction::Max), one.finish(AggFunction::Max));
        let (mut one, mut run) = (AggState::default(), AggState::default());
        ts.iter().zip(&ints).for_each(|(&t, &v)| one.add(&FieldVal::Int(v), t));
        run.add_ints(&ts[30..], &ints[30..]);
        run.add_ints(&ts[..30], &ints[..30]);
        run.add_ints(&[], &[]);
        assert_eq!(one, run);
    }

    #[test]
    fn ties_between_non_numeric_values_do_not_depend_on_arrival_order() {
        let (a, b) = (FieldVal::Str("a".into()), FieldVal::Str("b".into()));
        let (mut x, mut y) = (AggState::default(), AggState::default());
        x.add(&a, 5);
        x.add(&b, 5);
        y.add(&b, 5);
        y.add(&a, 5);
        assert_eq!(x.finish(AggFunction::Last), y.finish(AggFunction::Last));
        assert_eq!(x.finish(AggFunction::First), y.finish(AggFunction::First));
    }

    #[test]
    fn integers_stay_integers_and_nulls_are_skipped() {
        let mut s = AggState::default();
        for (i, v) in [FieldVal::Int(5), FieldVal::Null, FieldVal::Int(-2)].into_iter().enumerate() {
            s.add(&v, i as i64);
        }
        assert_eq!(s.finish(AggFunction::Sum), FieldVal::Int(3));
        assert_eq!(s.finish(AggFunction::Min), FieldVal::Int(-2));
        assert_eq!(s.finish(AggFunction::Count), FieldVal::Int(2));
        assert_eq!(s.finish(AggFunction::Mean), FieldVal::Float(1.5));
        assert_eq!(AggState::default().finish(AggFunction::Max), FieldVal::Null);
    }
}
