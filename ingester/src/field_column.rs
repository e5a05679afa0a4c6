//! One field's values in a memtable chunk, stored as a typed vector: a
//! float or integer sample costs 8 bytes, not a 32-byte `FieldVal` inside a
//! per-point allocation.

use canopy_api::v1::FieldType;
use canopy_model::FieldVal;

/// The values, typed by the field's schema type. Points are validated
/// against the schema, so a value of another type does not arrive; if one
/// did, the column falls back to holding `FieldVal`s rather than lose it.
#[derive(Debug, Clone)]
enum Values {
    Int(Vec<i64>),
    Float(Vec<f64>),
    Any(Vec<FieldVal>),
}

/// A column of one field: values plus which rows are null.
#[derive(Debug, Clone)]
pub(crate) struct FieldColumn {
    values: Values,
    /// One bit per row, set where the value is null; empty until the first
    /// null (most fields never have one).
    nulls: Vec<u64>,
}

impl FieldColumn {
    /// An empty column for a field of type `ty` (a `FieldType` as i32).
    pub(crate) fn new(ty: i32) -> FieldColumn {
        let values = match FieldType::try_from(ty) {
            Ok(FieldType::Int) => Values::Int(Vec::new()),
            Ok(FieldType::Float) => Values::Float(Vec::new()),
            _ => Values::Any(Vec::new()),
        };
        FieldColumn { values, nulls: Vec::new() }
    }

    /// A column of `len` nulls (a field a chunk's layout does not have).
    pub(crate) fn all_null(len: usize) -> FieldColumn {
        let mut c = FieldColumn { values: Values::Any(Vec::with_capacity(len)), nulls: Vec::new() };
        for _ in 0..len {
            c.push(FieldVal::Null);
        }
        c
    }

    /// Rows held.
    pub(crate) fn len(&self) -> usize {
        match &self.values {
            Values::Int(v) => v.len(),
            Values::Float(v) => v.len(),
            Values::Any(v) => v.len(),
        }
    }

    /// Appends a value.
    pub(crate) fn push(&mut self, v: FieldVal) {
        let row = self.len();
        if matches!(v, FieldVal::Null) {
            self.nulls.resize(self.nulls.len().max(row / 64 + 1), 0);
            self.nulls[row / 64] |= 1 << (row % 64);
        } else if !self.nulls.is_empty() && row / 64 >= self.nulls.len() {
            self.nulls.push(0);
        }
        match (&mut self.values, v) {
            (_, FieldVal::Null) => self.push_placeholder(),
            (Values::Int(c), FieldVal::Int(n)) => c.push(n),
            (Values::Float(c), FieldVal::Float(f)) => c.push(f),
            (Values::Any(c), v) => c.push(v),
            (_, v) => {
                self.values = Values::Any((0..row).map(|i| self.get(i)).collect());
                let Values::Any(c) = &mut self.values else { unreachable!("just set") };
                c.push(v);
            }
        }
    }

    fn push_placeholder(&mut self) {
        match &mut self.values {
            Values::Int(c) => c.push(0),
            Values::Float(c) => c.push(0.0),
            Values::Any(c) => c.push(FieldVal::Null),
        }
    }

    fn is_null(&self, row: usize) -> bool {
        self.nulls.get(row / 64).is_some_and(|w| w & (1 << (row % 64)) != 0)
    }

    /// The value of `row`.
    pub(crate) fn get(&self, row: usize) -> FieldVal {
        if self.is_null(row) {
            return FieldVal::Null;
        }
        match &self.values {
            Values::Int(c) => FieldVal::Int(c[row]),
            Values::Float(c) => FieldVal::Float(c[row]),
            Values::Any(c) => c[row].clone(),
        }
    }

    /// Heap bytes `v` adds beyond its slot (a string's or binary's own
    /// allocation), so the memtable can charge it without rescanning.
    pub(crate) fn value_heap_bytes(v: &FieldVal) -> usize {
        match v {
            FieldVal::Str(s) => s.capacity().next_multiple_of(16) + 16,
            FieldVal::Binary(b) => b.capacity().next_multiple_of(16) + 16,
            _ => 0,
        }
    }

    /// Heap bytes of the column's slots alone (capacity × slot size plus the
    /// null bitmap), which grow by doubling.
    pub(crate) fn slot_bytes(&self) -> usize {
        let slots = match &self.values {
            Values::Int(c) => c.capacity() * 8,
            Values::Float(c) => c.capacity() * 8,
            Values::Any(c) => c.capacity() * size_of::<FieldVal>(),
        };
        slots + self.nulls.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_columns_keep_values_and_nulls() {
        let mut c = FieldColumn::new(FieldType::Float as i32);
        let vals: Vec<FieldVal> = (0..200).map(|i| if i % 7 == 3 { FieldVal::Null } else { FieldVal::Float(i as f64 / 2.0) }).collect();
        for v in &vals {
            c.push(v.clone());
        }
        assert_eq!((0..200).map(|i| c.get(i)).collect::<Vec<_>>(), vals);
        assert_eq!(c.len(), 200);
    }

    #[test]
    fn nulls_before_values_and_values_after_nulls_read_back() {
        let mut c = FieldColumn::new(FieldType::Int as i32);
        c.push(FieldVal::Int(1));
        for _ in 0..70 {
            c.push(FieldVal::Int(2));
        }
        c.push(FieldVal::Null);
        c.push(FieldVal::Int(3));
        assert_eq!(c.get(0), FieldVal::Int(1));
        assert_eq!(c.get(71), FieldVal::Null);
        assert_eq!(c.get(72), FieldVal::Int(3));
        for i in 73..300 {
            c.push(FieldVal::Int(i));
        }
        assert_eq!(c.get(299), FieldVal::Int(299));
        assert_eq!(c.get(70), FieldVal::Int(2));
    }

    #[test]
    fn a_value_of_another_type_falls_back_without_losing_any() {
        let mut c = FieldColumn::new(FieldType::Int as i32);
        c.push(FieldVal::Int(5));
        c.push(FieldVal::Null);
        c.push(FieldVal::Str("x".into()));
        c.push(FieldVal::Int(6));
        let got: Vec<_> = (0..4).map(|i| c.get(i)).collect();
        assert_eq!(got, vec![FieldVal::Int(5), FieldVal::Null, FieldVal::Str("x".into()), FieldVal::Int(6)]);
        let s = FieldColumn::all_null(3);
        assert!((0..3).all(|i| s.get(i) == FieldVal::Null));
    }
}
