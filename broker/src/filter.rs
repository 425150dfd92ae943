//! Which messages a subscription wants: RocketMQ's tag filter (by tag hash, without reading the
//! message) or an SQL92 filter on the message's properties (`expressionType=SQL92`).
//!
//! The SQL92 grammar is RocketMQ's (`filter/.../SelectorParser.jj`): comparisons (`=`, `<>`, `>`,
//! `>=`, `<`, `<=`), `BETWEEN`, `IN`, `IS [NOT] NULL`, `AND`/`OR`/`NOT`, string, number and
//! boolean literals, property names. `sqlparser` parses it (RocketMQ's grammar is a subset of
//! SQL's); [`SqlFilter::parse`] then refuses everything outside that subset with a clear error,
//! so a bad expression is refused when a consumer subscribes (CHECK_CLIENT_CONFIG) or pulls.
//!
//! Evaluation follows SQL's three values: a missing property makes a comparison unknown, and a
//! message matches only when the whole expression is true. Property values are strings; one
//! compared with a number is read as a number (not a number: unknown), with a boolean as
//! `true`/`false`.

use sqlparser::ast::{BinaryOperator, Expr, InTarget, UnaryOperator, Value};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use raftmq_protocol::message::properties;

use crate::message_reader::TagFilter;

/// The longest SQL92 expression accepted.
pub const MAX_SQL_EXPRESSION_BYTES: usize = 4096;
/// How deeply an expression may nest (bounds the parser's and the evaluator's recursion).
pub const MAX_SQL_NESTING: usize = 64;
/// RocketMQ's name of the SQL92 expression type.
pub const EXPRESSION_TYPE_SQL92: &str = "SQL92";

/// A filter expression that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SQL92 filter {expression:?}: {reason}")]
pub struct FilterError {
    pub expression: String,
    pub reason: String,
}

/// A subscription's filter.
#[derive(Debug, Clone)]
pub enum MessageFilter {
    Tags(TagFilter),
    Sql(SqlFilter),
}

impl MessageFilter {
    /// The filter of an expression of `expression_type` (`TAG` when absent or empty).
    pub fn parse(expression_type: Option<&str>, expression: &str) -> Result<Self, FilterError> {
        match expression_type {
            Some(kind) if kind.eq_ignore_ascii_case(EXPRESSION_TYPE_SQL92) => {
                SqlFilter::parse(expression).map(MessageFilter::Sql)
            }
            _ => Ok(MessageFilter::Tags(TagFilter::parse(expression))),
        }
    }

    /// Whether a message with this tag hash, whose properties string `properties` gives when
    /// asked (only SQL filters ask), is wanted.
    pub fn matches<'a>(
        &self,
        tags_code: i64,
        properties: impl FnOnce() -> Option<&'a str>,
    ) -> bool {
        match self {
            MessageFilter::Tags(tags) => tags.matches(tags_code),
            MessageFilter::Sql(sql) => properties().is_some_and(|text| sql.matches(text)),
        }
    }

    pub fn all() -> Self {
        MessageFilter::Tags(TagFilter::All)
    }
}

/// A parsed, checked SQL92 expression.
#[derive(Debug, Clone)]
pub struct SqlFilter {
    expr: Box<Expr>,
}

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
enum Operand<'a> {
    Null,
    Text(&'a str),
    Number(f64),
    Bool(bool),
}

impl SqlFilter {
    /// Parses and checks an expression.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let error = |reason: String| FilterError {
            expression: text.to_string(),
            reason,
        };
        if text.trim().is_empty() {
            return Err(error("the expression is empty".into()));
        }
        if text.len() > MAX_SQL_EXPRESSION_BYTES {
            return Err(error(format!(
                "longer than {MAX_SQL_EXPRESSION_BYTES} bytes"
            )));
        }
        let expr = Parser::new(&GenericDialect {})
            .with_recursion_limit(MAX_SQL_NESTING)
            .try_with_sql(text)
            .and_then(|mut parser| {
                let expr = parser.parse_expr()?;
                parser.expect_token(&sqlparser::tokenizer::Token::EOF)?;
                Ok(expr)
            })
            .map_err(|err| error(err.to_string()))?;
        check(&expr, 0).map_err(error)?;
        Ok(Self {
            expr: Box::new(expr),
        })
    }

    /// Whether a message with this properties string matches (the expression is true).
    pub fn matches(&self, properties_text: &str) -> bool {
        truth(&self.expr, properties_text) == Some(true)
    }
}

/// Refuses what RocketMQ's grammar does not have.
fn check(expr: &Expr, depth: usize) -> Result<(), String> {
    if depth > MAX_SQL_NESTING {
        return Err(format!("nested more than {MAX_SQL_NESTING} deep"));
    }
    let next = depth + 1;
    match expr {
        Expr::Identifier(ident) if ident.quote_style.is_some() => Err(format!(
            "{ident} is a quoted name, which is not supported: strings take 'single quotes'"
        )),
        Expr::Identifier(_) => Ok(()),
        Expr::CompoundIdentifier(parts) => match parts.iter().find(|p| p.quote_style.is_some()) {
            Some(quoted) => Err(format!("{quoted} is a quoted name, which is not supported")),
            None => Ok(()),
        },
        Expr::Value(value) => match &value.value {
            Value::Number(..) | Value::SingleQuotedString(_) | Value::Boolean(_) | Value::Null => {
                Ok(())
            }
            other => Err(format!(
                "{other} is not a string, number or boolean literal"
            )),
        },
        Expr::Nested(inner) => check(inner, next),
        Expr::UnaryOp { op, expr } => match op {
            UnaryOperator::Not => check(expr, next),
            UnaryOperator::Minus | UnaryOperator::Plus if number_literal(expr).is_some() => Ok(()),
            other => Err(format!("the operator {other} is not supported")),
        },
        Expr::BinaryOp { left, op, right } => match op {
            BinaryOperator::And
            | BinaryOperator::Or
            | BinaryOperator::Eq
            | BinaryOperator::NotEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq
            | BinaryOperator::Lt
            | BinaryOperator::LtEq => {
                check(left, next)?;
                check(right, next)
            }
            other => Err(format!("the operator {other} is not supported")),
        },
        Expr::Between {
            expr, low, high, ..
        } => {
            check(expr, next)?;
            check(low, next)?;
            check(high, next)
        }
        Expr::In {
            expr,
            target: InTarget::List(list),
            global: false,
            ..
        } => {
            check(expr, next)?;
            list.iter().try_for_each(|item| check(item, next))
        }
        Expr::IsNull(inner) | Expr::IsNotNull(inner) => check(inner, next),
        other => Err(format!(
            "{other} is not supported (comparisons, BETWEEN, IN, IS [NOT] NULL, AND, OR, NOT)"
        )),
    }
}

/// A number literal, with its sign.
fn number_literal(expr: &Expr) -> Option<f64> {
    match expr {
        Expr::Value(value) => match &value.value {
            Value::Number(text, _) => text.parse().ok(),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => number_literal(expr).map(|n| -n),
        Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => number_literal(expr),
        Expr::Nested(inner) => number_literal(inner),
        _ => None,
    }
}

fn property_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(ident) => Some(ident.value.clone()),
        Expr::CompoundIdentifier(parts) => Some(
            parts
                .iter()
                .map(|part| part.value.as_str())
                .collect::<Vec<_>>()
                .join("."),
        ),
        _ => None,
    }
}

fn operand<'a>(expr: &'a Expr, props: &'a str) -> Operand<'a> {
    if let Some(number) = number_literal(expr) {
        return Operand::Number(number);
    }
    if let Some(name) = property_name(expr) {
        return properties::find(props, &name).map_or(Operand::Null, Operand::Text);
    }
    match expr {
        Expr::Value(value) => match &value.value {
            Value::SingleQuotedString(text) => Operand::Text(text),
            Value::Boolean(b) => Operand::Bool(*b),
            _ => Operand::Null,
        },
        Expr::Nested(inner) => operand(inner, props),
        // A logical sub-expression used as a value.
        other => truth(other, props).map_or(Operand::Null, Operand::Bool),
    }
}

/// Compares two operands: `None` when unknown (a null, or values of kinds that do not compare).
fn compare(left: &Operand<'_>, right: &Operand<'_>) -> Option<std::cmp::Ordering> {
    use Operand::*;
    match (left, right) {
        (Null, _) | (_, Null) => None,
        (Number(a), Number(b)) => a.partial_cmp(b),
        (Text(text), Number(n)) => text.trim().parse::<f64>().ok()?.partial_cmp(n),
        (Number(n), Text(text)) => n.partial_cmp(&text.trim().parse::<f64>().ok()?),
        (Text(a), Text(b)) => Some(a.cmp(b)),
        (Bool(a), Bool(b)) => Some(a.cmp(b)),
        (Text(text), Bool(b)) | (Bool(b), Text(text)) => {
            let parsed = match text.trim() {
                t if t.eq_ignore_ascii_case("true") => true,
                t if t.eq_ignore_ascii_case("false") => false,
                _ => return None,
            };
            Some(parsed.cmp(b))
        }
        _ => None,
    }
}

/// Ordering comparisons between two strings are numeric, as RocketMQ's are (two strings that
/// are not numbers do not order).
fn ordered(left: &Operand<'_>, right: &Operand<'_>) -> Option<std::cmp::Ordering> {
    match (left, right) {
        (Operand::Text(a), Operand::Text(b)) => a
            .trim()
            .parse::<f64>()
            .ok()?
            .partial_cmp(&b.trim().parse::<f64>().ok()?),
        _ => compare(left, right),
    }
}

/// SQL's three-valued truth of an expression: `None` is unknown.
fn truth(expr: &Expr, props: &str) -> Option<bool> {
    use std::cmp::Ordering::*;
    match expr {
        Expr::Nested(inner) => truth(inner, props),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => truth(expr, props).map(|value| !value),
        Expr::BinaryOp { left, op, right } => match op {
            BinaryOperator::And => match (truth(left, props), truth(right, props)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            BinaryOperator::Or => match (truth(left, props), truth(right, props)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            comparison => {
                let (left, right) = (operand(left, props), operand(right, props));
                match comparison {
                    BinaryOperator::Eq => compare(&left, &right).map(|o| o == Equal),
                    BinaryOperator::NotEq => compare(&left, &right).map(|o| o != Equal),
                    BinaryOperator::Gt => ordered(&left, &right).map(|o| o == Greater),
                    BinaryOperator::GtEq => ordered(&left, &right).map(|o| o != Less),
                    BinaryOperator::Lt => ordered(&left, &right).map(|o| o == Less),
                    BinaryOperator::LtEq => ordered(&left, &right).map(|o| o != Greater),
                    _ => None,
                }
            }
        },
        Expr::Between {
            expr,
            negated,
            low,
            high,
        } => {
            let value = operand(expr, props);
            let above = ordered(&value, &operand(low, props)).map(|o| o != Less);
            let below = ordered(&value, &operand(high, props)).map(|o| o != Greater);
            let inside = match (above, below) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            };
            inside.map(|inside| inside != *negated)
        }
        Expr::In {
            expr,
            target: InTarget::List(list),
            negated,
            ..
        } => {
            let value = operand(expr, props);
            if value == Operand::Null {
                return None;
            }
            let found = list
                .iter()
                .any(|item| compare(&value, &operand(item, props)) == Some(Equal));
            Some(found != *negated)
        }
        Expr::IsNull(inner) => Some(operand(inner, props) == Operand::Null),
        Expr::IsNotNull(inner) => Some(operand(inner, props) != Operand::Null),
        other => match operand(other, props) {
            Operand::Bool(value) => Some(value),
            Operand::Text(text) if text.eq_ignore_ascii_case("true") => Some(true),
            Operand::Text(text) if text.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> String {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}\u{1}{v}\u{2}"))
            .collect()
    }

    fn matches(expression: &str, pairs: &[(&str, &str)]) -> bool {
        SqlFilter::parse(expression)
            .unwrap_or_else(|err| panic!("{err}"))
            .matches(&props(pairs))
    }

    #[test]
    fn rocketmqs_operators_evaluate_on_properties() {
        let m = [
            ("a", "5"),
            ("region", "eu"),
            ("vip", "true"),
            ("price", "9.5"),
        ];
        for (expression, expected) in [
            ("a = 5", true),
            ("a <> 5", false),
            ("a > 4 AND a < 6", true),
            ("a >= 5 AND a <= 5", true),
            ("a BETWEEN 0 AND 3", false),
            ("a NOT BETWEEN 0 AND 3", true),
            ("a between 5 and 10", true),
            ("price > 9", true),
            ("a > -1", true),
            ("region = 'eu'", true),
            ("region IN ('us', 'eu')", true),
            ("region NOT IN ('us', 'eu')", false),
            ("region = 'us' OR vip = TRUE", true),
            ("NOT (region = 'us')", true),
            ("missing IS NULL", true),
            ("missing IS NOT NULL", false),
            ("region IS NOT NULL", true),
            ("vip = FALSE", false),
            ("(a > 1 AND (region = 'eu' OR region = 'us'))", true),
            ("TRUE", true),
            ("FALSE OR a = 5", true),
        ] {
            assert_eq!(matches(expression, &m), expected, "{expression}");
        }
    }

    #[test]
    fn a_missing_property_makes_a_comparison_unknown_never_true() {
        let m = [("a", "1")];
        for expression in [
            "b = 1",
            "b <> 1",
            "NOT (b = 1)",
            "b > 0 OR b <= 0",
            "b BETWEEN 0 AND 9",
            "b IN ('x')",
            "b NOT IN ('x')",
        ] {
            assert!(!matches(expression, &m), "{expression}");
        }
        // Unknown OR true is true; unknown AND false is false.
        assert!(matches("b = 1 OR a = 1", &m));
        assert!(!matches("NOT (b = 1 AND a = 2)", &[("a", "2")]));
        // A value that is not a number does not compare with one.
        assert!(!matches("a > 0", &[("a", "abc")]));
    }

    #[test]
    fn what_rocketmqs_grammar_lacks_is_refused_with_a_clear_error() {
        for (expression, reason) in [
            ("", "empty"),
            ("a = ", "Expected"),
            ("a = 1 b = 2", "Expected"),
            ("a + 1 > 2", "not supported"),
            ("upper(a) = 'X'", "not supported"),
            ("a LIKE 'x%'", "not supported"),
            ("a = \"x\"", "quoted name"),
            ("a IN (SELECT b FROM t)", "not supported"),
        ] {
            let err = SqlFilter::parse(expression)
                .expect_err(expression)
                .to_string();
            assert!(err.contains(reason), "{expression}: {err}");
        }
        let deep = format!("{}a = 1{}", "(".repeat(200), ")".repeat(200));
        assert!(SqlFilter::parse(&deep).is_err());
        assert!(SqlFilter::parse(&"a = 1 OR ".repeat(1000)).is_err());
    }

    #[test]
    fn the_expression_type_chooses_the_filter() {
        assert!(matches!(
            MessageFilter::parse(None, "TagA || TagB").unwrap(),
            MessageFilter::Tags(TagFilter::Tags(_))
        ));
        assert!(matches!(
            MessageFilter::parse(Some("TAG"), "*").unwrap(),
            MessageFilter::Tags(TagFilter::All)
        ));
        assert!(matches!(
            MessageFilter::parse(Some("SQL92"), "a > 1").unwrap(),
            MessageFilter::Sql(_)
        ));
        assert!(MessageFilter::parse(Some("sql92"), "a >").is_err());
        let filter = MessageFilter::parse(Some("SQL92"), "a > 1").unwrap();
        assert!(filter.matches(0, || Some("a\u{1}2\u{2}")));
        assert!(
            !filter.matches(0, || None),
            "unreadable properties match nothing"
        );
    }
}
