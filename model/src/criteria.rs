//! Query criteria compiled to a predicate over a row's tags.

use std::cmp::Ordering;

use canopy_api::v1::{BinaryOp, Criteria, FieldType, TagType, criteria, logical_expression::LogicalOp};

use crate::layout::ColumnLayout;
use crate::value::{FieldVal, TagVal};
use crate::{ModelError, Result};

/// Deepest criteria tree accepted; bounds recursion on hostile input.
pub const CRITERIA_DEPTH_MAX: usize = 64;

/// A compiled condition tree. Tags are referenced by layout index.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// No criteria: every row matches.
    True,
    And(Box<Predicate>, Box<Predicate>),
    Or(Box<Predicate>, Box<Predicate>),
    Cmp {
        tag: usize,
        op: BinaryOp,
        value: TagVal,
    },
    /// A numeric comparison on a field (null never matches).
    FieldCmp {
        field: usize,
        op: BinaryOp,
        value: f64,
    },
}

impl Predicate {
    /// Compiles criteria against a layout, naming the offending path on error.
    pub fn compile(c: Option<&Criteria>, layout: &ColumnLayout) -> Result<Predicate> {
        match c {
            None => Ok(Predicate::True),
            Some(c) => compile(c, layout, "criteria", 0),
        }
    }

    /// Evaluates the predicate on a row's tags and fields, laid out as the
    /// compiled layout.
    pub fn eval(&self, tags: &[TagVal], fields: &[FieldVal]) -> bool {
        match self {
            Predicate::True => true,
            Predicate::And(a, b) => a.eval(tags, fields) && b.eval(tags, fields),
            Predicate::Or(a, b) => a.eval(tags, fields) || b.eval(tags, fields),
            Predicate::Cmp { tag, op, value } => compare(&tags[*tag], *op, value),
            Predicate::FieldCmp { field, op, value } => fields[*field].as_f64().is_some_and(|v| compare_num(v, *op, *value)),
        }
    }

    /// The part of the predicate that reads tags only and that every
    /// matching row must satisfy: the AND-ed conjuncts without field
    /// conditions (an OR that reads a field is dropped, weakening to true).
    pub fn tag_conjuncts(&self) -> Predicate {
        match self {
            Predicate::And(a, b) => match (a.tag_conjuncts(), b.tag_conjuncts()) {
                (Predicate::True, x) | (x, Predicate::True) => x,
                (x, y) => Predicate::And(Box::new(x), Box::new(y)),
            },
            Predicate::FieldCmp { .. } => Predicate::True,
            p => {
                let mut fields = Vec::new();
                p.fields_used(&mut fields);
                if fields.is_empty() { p.clone() } else { Predicate::True }
            }
        }
    }

    /// Fields the predicate reads.
    pub fn fields_used(&self, out: &mut Vec<usize>) {
        match self {
            Predicate::And(a, b) | Predicate::Or(a, b) => {
                a.fields_used(out);
                b.fields_used(out);
            }
            Predicate::FieldCmp { field, .. } => out.push(*field),
            Predicate::True | Predicate::Cmp { .. } => {}
        }
    }

    /// Tags the predicate reads, so a scan can decode only those.
    pub fn tags_used(&self, out: &mut Vec<usize>) {
        match self {
            Predicate::True => {}
            Predicate::And(a, b) | Predicate::Or(a, b) => {
                a.tags_used(out);
                b.tags_used(out);
            }
            Predicate::Cmp { tag, .. } => out.push(*tag),
            Predicate::FieldCmp { .. } => {}
        }
    }
}

fn compile(c: &Criteria, layout: &ColumnLayout, path: &str, depth: usize) -> Result<Predicate> {
    if depth > CRITERIA_DEPTH_MAX {
        return Err(ModelError::invalid(path, format!("criteria nested deeper than {CRITERIA_DEPTH_MAX}")));
    }
    match &c.exp {
        None => Err(ModelError::invalid(path, "either le or condition is required")),
        Some(criteria::Exp::Le(le)) => {
            let side = |s: &Option<Box<Criteria>>, name: &str| -> Result<Predicate> {
                match s {
                    Some(s) => compile(s, layout, &format!("{path}.le.{name}"), depth + 1),
                    None => Err(ModelError::invalid(format!("{path}.le.{name}"), "required")),
                }
            };
            let (l, r) = (side(&le.left, "left")?, side(&le.right, "right")?);
            match LogicalOp::try_from(le.op) {
                Ok(LogicalOp::And) => Ok(Predicate::And(Box::new(l), Box::new(r))),
                Ok(LogicalOp::Or) => Ok(Predicate::Or(Box::new(l), Box::new(r))),
                _ => Err(ModelError::invalid(format!("{path}.le.op"), "must be LOGICAL_OP_AND or LOGICAL_OP_OR")),
            }
        }
        Some(criteria::Exp::Condition(cond)) if cond.field_value.is_some() => {
            let cpath = format!("{path}.condition");
            let field = layout
                .field_index(&cond.name)
                .ok_or_else(|| ModelError::invalid(format!("{cpath}.name"), format!("unknown field {:?}", cond.name)))?;
            let op = BinaryOp::try_from(cond.op)
                .ok()
                .filter(|op| matches!(op, BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge))
                .ok_or_else(|| ModelError::invalid(format!("{cpath}.op"), "field conditions take EQ, NE, LT, LE, GT or GE"))?;
            let value = cond
                .field_value
                .as_ref()
                .map(FieldVal::from_proto)
                .and_then(|v| v.as_f64())
                .ok_or_else(|| ModelError::invalid(format!("{cpath}.field_value"), "an int or float operand is required"))?;
            if !matches!(layout.field_type(field), FieldType::Int | FieldType::Float) {
                return Err(ModelError::invalid(format!("{cpath}.name"), format!("field {:?} is not numeric", cond.name)));
            }
            Ok(Predicate::FieldCmp { field, op, value })
        }
        Some(criteria::Exp::Condition(cond)) => {
            let cpath = format!("{path}.condition");
            let tag = layout
                .tag_index(&cond.name)
                .ok_or_else(|| ModelError::invalid(format!("{cpath}.name"), format!("unknown tag {:?}", cond.name)))?;
            let op = BinaryOp::try_from(cond.op)
                .ok()
                .filter(|op| *op != BinaryOp::Unspecified)
                .ok_or_else(|| ModelError::invalid(format!("{cpath}.op"), "a BINARY_OP_* value is required"))?;
            let value = cond.value.as_ref().map(TagVal::from_proto).unwrap_or_default();
            check_operand(layout.tag_type(tag), op, &value)
                .map_err(|m| ModelError::invalid(format!("{cpath}.value"), format!("tag {:?}: {m}", cond.name)))?;
            Ok(Predicate::Cmp { tag, op, value })
        }
    }
}

fn check_operand(ty: TagType, op: BinaryOp, v: &TagVal) -> std::result::Result<(), String> {
    let scalar_ok = matches!(
        (ty, v),
        (TagType::String, TagVal::Str(_))
            | (TagType::Int, TagVal::Int(_))
            | (TagType::DataBinary, TagVal::Binary(_))
            | (TagType::StringArray, TagVal::StrArray(_))
            | (TagType::IntArray, TagVal::IntArray(_))
    );
    match op {
        BinaryOp::In | BinaryOp::NotIn => match (ty, v) {
            (TagType::String, TagVal::StrArray(_)) | (TagType::Int, TagVal::IntArray(_)) => Ok(()),
            _ => Err(format!("{} needs an array of the tag's type, got {}", op.as_str_name(), v.type_name())),
        },
        _ if scalar_ok => Ok(()),
        _ => Err(format!("expected a {} operand, got {}", ty.as_str_name(), v.type_name())),
    }
}

fn compare(tag: &TagVal, op: BinaryOp, value: &TagVal) -> bool {
    match op {
        BinaryOp::Eq => tag == value,
        BinaryOp::Ne => tag != value,
        BinaryOp::In => contains(value, tag),
        BinaryOp::NotIn => !contains(value, tag),
        BinaryOp::Lt => tag.compare(value) == Some(Ordering::Less),
        BinaryOp::Le => matches!(tag.compare(value), Some(Ordering::Less | Ordering::Equal)),
        BinaryOp::Gt => tag.compare(value) == Some(Ordering::Greater),
        BinaryOp::Ge => matches!(tag.compare(value), Some(Ordering::Greater | Ordering::Equal)),
        BinaryOp::Unspecified => false,
    }
}

fn compare_num(v: f64, op: BinaryOp, x: f64) -> bool {
    match op {
        BinaryOp::Eq => v == x,
        BinaryOp::Ne => v != x,
        BinaryOp::Lt => v < x,
        BinaryOp::Le => v <= x,
        BinaryOp::Gt => v > x,
        BinaryOp::Ge => v >= x,
        _ => false,
    }
}

fn contains(set: &TagVal, v: &TagVal) -> bool {
    match (set, v) {
        (TagVal::StrArray(a), TagVal::Str(s)) => a.contains(s),
        (TagVal::IntArray(a), TagVal::Int(i)) => a.contains(i),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_api::v1::{Condition, LogicalExpression};

    fn layout() -> ColumnLayout {
        ColumnLayout {
            tags: vec![("d".into(), "host".into(), TagType::String as i32), ("d".into(), "port".into(), TagType::Int as i32)],
            fields: vec![],
        }
    }

    fn cond(name: &str, op: BinaryOp, v: TagVal) -> Criteria {
        Criteria {
            exp: Some(criteria::Exp::Condition(Condition {
                name: name.into(),
                op: op as i32,
                value: Some(v.to_proto()),
                field_value: None,
            })),
        }
    }

    fn and_or(op: LogicalOp, l: Criteria, r: Criteria) -> Criteria {
        Criteria {
            exp: Some(criteria::Exp::Le(Box::new(LogicalExpression { op: op as i32, left: Some(Box::new(l)), right: Some(Box::new(r)) }))),
        }
    }

    #[test]
    fn evaluates_a_tree_of_conditions() {
        let c = and_or(
            LogicalOp::Or,
            and_or(LogicalOp::And, cond("host", BinaryOp::Eq, TagVal::Str("a".into())), cond("port", BinaryOp::Ge, TagVal::Int(80))),
            cond("host", BinaryOp::In, TagVal::StrArray(vec!["z".into(), "y".into()])),
        );
        let p = Predicate::compile(Some(&c), &layout()).unwrap();
        let row = |h: &str, p: i64| vec![TagVal::Str(h.into()), TagVal::Int(p)];
        assert!(p.eval(&row("a", 80), &[]));
        assert!(!p.eval(&row("a", 79), &[]));
        assert!(p.eval(&row("y", 1), &[]));
        assert!(!p.eval(&row("b", 100), &[]));
        assert!(!p.eval(&[TagVal::Null, TagVal::Null], &[]));
    }

    #[test]
    fn tag_conjuncts_keep_only_what_every_match_satisfies() {
        let tag = Predicate::Cmp { tag: 0, op: BinaryOp::Eq, value: TagVal::Str("a".into()) };
        let field = Predicate::FieldCmp { field: 0, op: BinaryOp::Gt, value: 1.0 };
        let and = Predicate::And(Box::new(tag.clone()), Box::new(field.clone()));
        assert_eq!(and.tag_conjuncts(), tag);
        let or = Predicate::Or(Box::new(tag.clone()), Box::new(field));
        assert_eq!(or.tag_conjuncts(), Predicate::True);
        let or_tags = Predicate::Or(Box::new(tag.clone()), Box::new(tag.clone()));
        assert_eq!(or_tags.tag_conjuncts(), or_tags);
    }

    #[test]
    fn rejects_unknown_tags_and_mistyped_operands_by_path() {
        let e = Predicate::compile(Some(&cond("nope", BinaryOp::Eq, TagVal::Int(1))), &layout()).unwrap_err();
        assert!(e.to_string().contains("criteria.condition.name"), "{e}");
        let e = Predicate::compile(Some(&cond("port", BinaryOp::Eq, TagVal::Str("x".into()))), &layout()).unwrap_err();
        assert!(e.to_string().contains("criteria.condition.value"), "{e}");
        let e = Predicate::compile(Some(&cond("port", BinaryOp::In, TagVal::Int(1))), &layout()).unwrap_err();
        assert!(e.to_string().contains("BINARY_OP_IN"), "{e}");
    }
}
