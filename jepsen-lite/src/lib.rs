//! jepsen-lite: fault injection, histories and checkers that prove nothing acknowledged is lost,
//! reordered or invented.
//!
//! Being built under issue "jepsen-lite".
