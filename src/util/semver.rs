//! Semantic versions and the Masterminds constraint syntax Flux uses: `~2.0`, `^1.2`,
//! `>=1.0 <2.0`, `1.x`, `*`, `1.2 - 1.4`, `||`, a `v` prefix. Versions with a
//! prerelease match only a constraint group that names a prerelease itself.

use std::cmp::Ordering;
use std::fmt;

/// A parsed version. Missing minor/patch parts read as 0 (`v2` is 2.0.0), as Flux's
/// coercing parser does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Patch.
    pub patch: u64,
    /// Dot-separated prerelease identifiers; empty for a release.
    pub pre: Vec<String>,
}

impl Version {
    /// Parses `v1.2.3-rc.1+build`; build metadata is ignored.
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.strip_prefix('v').unwrap_or(s);
        let s = s.split_once('+').map(|(v, _)| v).unwrap_or(s);
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) => (c, p),
            None => (s, ""),
        };
        let mut parts = core.split('.');
        let num = |p: Option<&str>| -> Option<Option<u64>> {
            match p {
                None => Some(None),
                Some(x) if !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()) => {
                    x.parse().ok().map(Some)
                }
                _ => None,
            }
        };
        let major = num(parts.next())??;
        let minor = num(parts.next())?.unwrap_or(0);
        let patch = num(parts.next())?.unwrap_or(0);
        if parts.next().is_some() {
            return None;
        }
        let pre: Vec<String> = if pre.is_empty() {
            vec![]
        } else {
            pre.split('.').map(str::to_string).collect()
        };
        if pre
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            return None;
        }
        Some(Version {
            major,
            minor,
            patch,
            pre,
        })
    }

    fn new(major: u64, minor: u64, patch: u64) -> Version {
        Version {
            major,
            minor,
            patch,
            pre: vec![],
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre.join("."))?;
        }
        Ok(())
    }
}

impl Ord for Version {
    /// SemVer 2.0 precedence: a prerelease sorts before its release; numeric
    /// identifiers compare numerically and before alphanumeric ones.
    fn cmp(&self, o: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(o.major, o.minor, o.patch))
            .then_with(|| match (self.pre.is_empty(), o.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&o.pre) {
                        let ord = match (a.parse::<u64>(), b.parse::<u64>()) {
                            (Ok(x), Ok(y)) => x.cmp(&y),
                            (Ok(_), Err(_)) => Ordering::Less,
                            (Err(_), Ok(_)) => Ordering::Greater,
                            (Err(_), Err(_)) => a.cmp(b),
                        };
                        if ord != Ordering::Equal {
                            return ord;
                        }
                    }
                    self.pre.len().cmp(&o.pre.len())
                }
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Cmp {
    op: Op,
    v: Version,
}

impl Cmp {
    fn matches(&self, v: &Version) -> bool {
        match self.op {
            Op::Eq => v == &self.v,
            Op::Ne => v != &self.v,
            Op::Gt => v > &self.v,
            Op::Ge => v >= &self.v,
            Op::Lt => v < &self.v,
            Op::Le => v <= &self.v,
        }
    }
}

/// A parsed constraint: OR of AND groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    groups: Vec<Vec<Cmp>>,
    text: String,
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A version with wildcards: `None` parts are `x`, `*` or missing.
struct Partial {
    major: Option<u64>,
    minor: Option<u64>,
    patch: Option<u64>,
    pre: Vec<String>,
}

fn parse_partial(s: &str) -> Result<Partial, String> {
    let s = s.strip_prefix('v').unwrap_or(s);
    let s = s.split_once('+').map(|(v, _)| v).unwrap_or(s);
    let (core, pre) = s.split_once('-').unwrap_or((s, ""));
    let mut nums = [None; 3];
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty() || parts.len() > 3 {
        return Err(format!("invalid version {s:?}"));
    }
    let mut wild = false;
    for (i, p) in parts.iter().enumerate() {
        match *p {
            "x" | "X" | "*" => wild = true,
            n if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !wild => {
                nums[i] = Some(n.parse().map_err(|_| format!("invalid version {s:?}"))?)
            }
            _ => return Err(format!("invalid version {s:?}")),
        }
    }
    let pre = if pre.is_empty() {
        vec![]
    } else {
        pre.split('.').map(str::to_string).collect()
    };
    Ok(Partial {
        major: nums[0],
        minor: nums[1],
        patch: nums[2],
        pre,
    })
}

fn floor(p: &Partial) -> Version {
    Version {
        major: p.major.unwrap_or(0),
        minor: p.minor.unwrap_or(0),
        patch: p.patch.unwrap_or(0),
        pre: p.pre.clone(),
    }
}

/// The first version above everything `p` covers (`1.2` gives 1.3.0).
fn ceiling(p: &Partial) -> Option<Version> {
    match (p.major, p.minor, p.patch) {
        (None, _, _) => None,
        (Some(m), None, _) => Some(Version::new(m + 1, 0, 0)),
        (Some(m), Some(n), None) => Some(Version::new(m, n + 1, 0)),
        (Some(m), Some(n), Some(p)) => Some(Version::new(m, n, p + 1)),
    }
}

fn expand(op: &str, p: Partial, out: &mut Vec<Cmp>) {
    let lo = floor(&p);
    let exact = p.patch.is_some();
    let c = |op, v| Cmp { op, v };
    match op {
        "" | "=" if exact => out.push(c(Op::Eq, lo)),
        "" | "=" => {
            out.push(c(Op::Ge, lo));
            out.extend(ceiling(&p).map(|hi| c(Op::Lt, hi)));
        }
        "!=" if exact => out.push(c(Op::Ne, lo)),
        "!=" => {
            // Outside the wildcard range; approximated by excluding its floor.
            out.push(c(Op::Ne, lo));
        }
        ">" if exact => out.push(c(Op::Gt, lo)),
        ">" => match ceiling(&p) {
            Some(hi) => out.push(c(Op::Ge, hi)),
            None => out.push(c(Op::Lt, Version::new(0, 0, 0))),
        },
        ">=" | "=>" => out.push(c(Op::Ge, lo)),
        "<" => out.push(c(Op::Lt, lo)),
        "<=" | "=<" if exact => out.push(c(Op::Le, lo)),
        "<=" | "=<" => {
            if let Some(hi) = ceiling(&p) {
                out.push(c(Op::Lt, hi))
            }
        }
        "~" | "~>" => {
            out.push(c(Op::Ge, lo.clone()));
            let hi = match (p.major, p.minor) {
                (Some(m), Some(n)) => Some(Version::new(m, n + 1, 0)),
                (Some(m), None) => Some(Version::new(m + 1, 0, 0)),
                _ => None,
            };
            out.extend(hi.map(|hi| c(Op::Lt, hi)));
        }
        "^" => {
            out.push(c(Op::Ge, lo.clone()));
            let hi = match (p.major, p.minor, p.patch) {
                (None, _, _) => None,
                (Some(m), _, _) if m > 0 => Some(Version::new(m + 1, 0, 0)),
                (Some(0), None, _) => Some(Version::new(1, 0, 0)),
                (Some(0), Some(n), _) if n > 0 => Some(Version::new(0, n + 1, 0)),
                (Some(0), Some(0), None) => Some(Version::new(0, 1, 0)),
                (Some(0), Some(0), Some(pt)) => Some(Version::new(0, 0, pt + 1)),
                _ => None,
            };
            out.extend(hi.map(|hi| c(Op::Lt, hi)));
        }
        _ => unreachable!("operators are matched by the tokenizer"),
    }
}

const OPS: [&str; 11] = ["!=", ">=", "=>", "<=", "=<", "~>", ">", "<", "=", "~", "^"];

impl Constraint {
    /// Parses a constraint; the error names the offending part.
    pub fn parse(text: &str) -> Result<Constraint, String> {
        let mut groups = Vec::new();
        for group in text.split("||") {
            let group = group.trim();
            if group.is_empty() {
                return Err(format!("invalid semver range {text:?}: empty alternative"));
            }
            let mut cmps = Vec::new();
            // Hyphen range: `1.2 - 1.4.5`
            if let Some((a, b)) = group.split_once(" - ") {
                let lo = parse_partial(a.trim())
                    .map_err(|e| format!("invalid semver range {text:?}: {e}"))?;
                let hi = parse_partial(b.trim())
                    .map_err(|e| format!("invalid semver range {text:?}: {e}"))?;
                expand(">=", lo, &mut cmps);
                expand("<=", hi, &mut cmps);
                groups.push(cmps);
                continue;
            }
            let mut tokens: Vec<String> = Vec::new();
            for raw in group.split([' ', ',']).filter(|t| !t.is_empty()) {
                // Join an operator written apart from its version: `>= 1.2`.
                if let Some(last) = tokens.last_mut() {
                    if OPS.contains(&last.as_str()) {
                        last.push_str(raw);
                        continue;
                    }
                }
                tokens.push(raw.to_string());
            }
            for tok in tokens {
                let op = OPS
                    .iter()
                    .find(|o| tok.starts_with(**o))
                    .copied()
                    .unwrap_or("");
                let ver = tok[op.len()..].trim();
                if ver.is_empty() {
                    return Err(format!(
                        "invalid semver range {text:?}: operator {op:?} without a version"
                    ));
                }
                let p = parse_partial(ver)
                    .map_err(|e| format!("invalid semver range {text:?}: {e}"))?;
                expand(op, p, &mut cmps);
            }
            groups.push(cmps);
        }
        Ok(Constraint {
            groups,
            text: text.to_string(),
        })
    }

    /// Whether `v` satisfies the constraint.
    pub fn matches(&self, v: &Version) -> bool {
        self.groups.iter().any(|g| {
            // Masterminds: a prerelease only matches a group that names a prerelease.
            if !v.pre.is_empty() && !g.iter().any(|c| !c.v.pre.is_empty()) {
                return false;
            }
            g.iter().all(|c| c.matches(v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(range: &str, yes: &[&str], no: &[&str]) {
        let c = Constraint::parse(range).unwrap();
        for v in yes {
            assert!(
                c.matches(&Version::parse(v).unwrap()),
                "{range} should match {v}"
            );
        }
        for v in no {
            assert!(
                !c.matches(&Version::parse(v).unwrap()),
                "{range} should not match {v}"
            );
        }
    }

    #[test]
    fn masterminds_ranges() {
        ok(
            "~2.0",
            &["2.0.0", "2.0.1", "v2.0.9"],
            &["2.1.0", "3.0.0", "1.9.9", "2.0.1-rc.1"],
        );
        ok("~1.2.3", &["1.2.3", "1.2.9"], &["1.3.0", "1.2.2"]);
        ok("~1", &["1.0.0", "1.9.0"], &["2.0.0"]);
        ok("^1.2", &["1.2.0", "1.9.9"], &["2.0.0", "1.1.9"]);
        ok("^0.2.3", &["0.2.3", "0.2.9"], &["0.3.0"]);
        ok("^0.0.3", &["0.0.3"], &["0.0.4"]);
        ok("^0", &["0.9.9"], &["1.0.0"]);
        ok(">=1.0 <2.0", &["1.0.0", "1.9.9"], &["2.0.0", "0.9.0"]);
        ok(">= 1.0, < 2.0", &["1.5.0"], &["2.0.0"]);
        ok("1.x", &["1.0.0", "1.9.9"], &["2.0.0"]);
        ok("1.2.x", &["1.2.0", "1.2.7"], &["1.3.0"]);
        ok("*", &["0.0.1", "9.9.9"], &["1.0.0-alpha"]);
        ok("<= 2.x", &["2.9.9"], &["3.0.0"]);
        ok("1.2 - 1.4.5", &["1.2.0", "1.4.5"], &["1.4.6"]);
        ok("<1.0 || >=3.0", &["0.5.0", "3.1.0"], &["2.0.0"]);
        ok(">=1.0.0-0", &["1.0.0-rc.1", "2.0.0-beta"], &["0.9.0"]);
        ok("1.2.3", &["1.2.3", "v1.2.3"], &["1.2.4"]);
    }

    #[test]
    fn ordering_and_errors() {
        let mut vs: Vec<Version> = [
            "1.0.0",
            "1.0.0-rc.1",
            "1.0.0-alpha",
            "1.0.0-alpha.2",
            "0.9.0",
            "1.0.0-alpha.10",
        ]
        .iter()
        .map(|s| Version::parse(s).unwrap())
        .collect();
        vs.sort();
        let got: Vec<String> = vs.iter().map(|v| v.to_string()).collect();
        assert_eq!(
            got,
            [
                "0.9.0",
                "1.0.0-alpha",
                "1.0.0-alpha.2",
                "1.0.0-alpha.10",
                "1.0.0-rc.1",
                "1.0.0"
            ]
        );
        assert!(Constraint::parse("~2.x.1").is_err());
        assert!(Constraint::parse(">=").is_err());
        assert!(Constraint::parse("banana").is_err());
        assert!(Version::parse("latest").is_none());
        assert!(Version::parse("1.2.3.4").is_none());
    }
}
