//! Sprig's arithmetic: integers stay integers (with overflow and division by zero as
//! errors), anything else computes in floats.

use super::{int, num, s, undefined};
use serde_json::{Number, Value};

fn is_int(v: &Value) -> bool {
    matches!(v, Value::Number(n) if n.is_i64())
}

fn arith(
    a: &Value,
    b: &Value,
    name: &str,
    op: fn(f64, f64) -> f64,
    iop: fn(i64, i64) -> Option<i64>,
) -> Result<Value, String> {
    if is_int(a) && is_int(b) {
        return iop(int(a)?, int(b)?)
            .map(Value::from)
            .ok_or_else(|| format!("{name}: integer overflow or division by zero"));
    }
    Ok(Number::from_f64(op(num(a)?, num(b)?))
        .map(Value::Number)
        .unwrap_or(Value::Null))
}

fn fold(
    a: &[Value],
    name: &str,
    unit: i64,
    op: fn(f64, f64) -> f64,
    iop: fn(i64, i64) -> Option<i64>,
) -> Result<Value, String> {
    let mut acc = Value::from(unit);
    for v in a {
        acc = arith(&acc, v, name, op, iop)?;
    }
    Ok(acc)
}

/// Calls a function of this family; the arity is already checked.
pub(super) fn call(name: &str, a: &[Value]) -> Result<Value, String> {
    Ok(match name {
        "add" => fold(a, name, 0, |x, y| x + y, i64::checked_add)?,
        "mul" => fold(a, name, 1, |x, y| x * y, i64::checked_mul)?,
        "sub" => arith(&a[0], &a[1], name, |x, y| x - y, i64::checked_sub)?,
        "div" => arith(&a[0], &a[1], name, |x, y| x / y, i64::checked_div)?,
        "mod" => arith(&a[0], &a[1], name, |x, y| x % y, i64::checked_rem)?,
        "max" | "min" => {
            let all = a.iter().map(int).collect::<Result<Vec<_>, _>>()?;
            let pick = if name == "max" {
                all.into_iter().max()
            } else {
                all.into_iter().min()
            };
            Value::from(pick.unwrap_or(0))
        }
        "int" | "int64" => Value::from(int(&a[0]).unwrap_or(0)),
        "float64" => Number::from_f64(num(&a[0]).unwrap_or(0.0))
            .map(Value::Number)
            .unwrap_or(Value::Null),
        "atoi" => Value::from(s(&a[0]).trim().parse::<i64>().unwrap_or(0)),
        _ => return undefined(name),
    })
}
