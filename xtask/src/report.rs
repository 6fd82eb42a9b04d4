//! Reads the Autobahn-format report that kosoku writes and judges it.
//!
//! Layout (kosoku's `_report.py`): `OUTDIR/index.json` maps
//! agent -> case id -> `{behavior, behaviorClose, duration, remoteCloseCode,
//! reportfile}`; `OUTDIR/<reportfile>` holds the case's full record (with
//! the `result` and `resultClose` explanations), and `OUTDIR/index.html` is
//! the browsable report. A case passes here only if both `behavior` and
//! `behaviorClose` are `OK` or `INFORMATIONAL` (stricter than kosoku's own exit
//! code, which also accepts `NON-STRICT`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Verdicts a case may have and still pass.
const ACCEPTED: [&str; 2] = ["OK", "INFORMATIONAL"];
/// The `behavior` verdicts counted in the summary, in this order; any other
/// value is counted under its own name after them.
const BEHAVIORS: [&str; 6] = [
    "OK",
    "NON-STRICT",
    "INFORMATIONAL",
    "UNIMPLEMENTED",
    "FAILED",
    "ERROR",
];

/// One case's entry in index.json.
struct Case {
    id: String,
    behavior: String,
    behavior_close: String,
    report_file: Option<String>,
}

impl Case {
    fn passed(&self) -> bool {
        ACCEPTED.contains(&self.behavior.as_str())
            && ACCEPTED.contains(&self.behavior_close.as_str())
    }
}

/// Prints a summary of the report in `outdir` (counts per verdict, then every
/// case that is not OK or INFORMATIONAL) and fails if any case is not, if the
/// report is empty, or if it does not hold `expected_cases` cases.
/// How many cases the report in `outdir` holds, all agents together.
pub fn case_count(outdir: &Path) -> Result<usize> {
    Ok(read_index(outdir)?.values().map(Vec::len).sum())
}

/// The report in `outdir`: each agent's cases.
fn read_index(outdir: &Path) -> Result<BTreeMap<String, Vec<Case>>> {
    let index_path = outdir.join("index.json");
    let text = std::fs::read_to_string(&index_path)
        .with_context(|| format!("cannot read {}", index_path.display()))?;
    let index: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", index_path.display()))?;
    parse_index(&index).with_context(|| format!("unexpected layout in {}", index_path.display()))
}

pub fn check(side: &str, outdir: &Path, expected_cases: Option<usize>) -> Result<()> {
    let agents = read_index(outdir)?;

    let mut total = 0;
    let mut bad = 0;
    for (agent, cases) in &agents {
        total += cases.len();
        println!(
            "autobahn {side} side, agent {agent:?}: {} cases",
            cases.len()
        );
        println!(
            "    behavior:      {}",
            counts(cases.iter().map(|c| c.behavior.as_str()), &BEHAVIORS)
        );
        println!(
            "    behaviorClose: {}",
            counts(
                cases.iter().map(|c| c.behavior_close.as_str()),
                &["OK", "INFORMATIONAL"]
            )
        );
        let failing: Vec<&Case> = cases.iter().filter(|c| !c.passed()).collect();
        bad += failing.len();
        if !failing.is_empty() {
            println!("    cases that are not OK/INFORMATIONAL:");
        }
        for case in failing {
            println!(
                "      {:<8} behavior={} behaviorClose={}{}",
                case.id,
                case.behavior,
                case.behavior_close,
                explanation(outdir, case)
            );
        }
    }
    println!(
        "    report: {} (data: {})",
        outdir.join("index.html").display(),
        outdir.join("index.json").display()
    );

    if total == 0 {
        bail!("the {side}-side report has no cases");
    }
    if let Some(expected) = expected_cases
        && expected != total
    {
        bail!("the {side}-side report has {total} cases but the fuzzingserver served {expected}");
    }
    if bad > 0 {
        bail!("{bad} of {total} {side}-side cases are not OK/INFORMATIONAL (listed above)");
    }
    println!("    all {total} cases OK or INFORMATIONAL");
    Ok(())
}

/// agent -> cases sorted by case id.
fn parse_index(index: &Value) -> Result<BTreeMap<String, Vec<Case>>> {
    let agents = index.as_object().context("top level is not an object")?;
    let mut out = BTreeMap::new();
    for (agent, cases) in agents {
        let cases = cases
            .as_object()
            .with_context(|| format!("agent {agent:?} does not map to an object"))?;
        let mut list = Vec::with_capacity(cases.len());
        for (id, entry) in cases {
            let field = |name: &str| {
                entry[name]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("case {id} has no string {name:?}"))
            };
            list.push(Case {
                id: id.clone(),
                behavior: field("behavior")?,
                behavior_close: field("behaviorClose")?,
                report_file: entry["reportfile"].as_str().map(str::to_owned),
            });
        }
        list.sort_by_key(|case| case_sort_key(&case.id));
        out.insert(agent.clone(), list);
    }
    Ok(out)
}

/// Orders case ids numerically by component: 1.2.10 after 1.2.9.
fn case_sort_key(id: &str) -> Vec<u64> {
    id.split('.')
        .map(|part| part.parse().unwrap_or(u64::MAX))
        .collect()
}

/// "OK 495, NON-STRICT 14, ..." with every name in `always` (even at zero)
/// followed by any other verdicts seen.
fn counts<'a>(values: impl Iterator<Item = &'a str>, always: &[&str]) -> String {
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    for value in values {
        *tally.entry(value).or_default() += 1;
    }
    let mut parts: Vec<String> = always
        .iter()
        .map(|name| format!("{name} {}", tally.remove(name).unwrap_or(0)))
        .collect();
    parts.extend(tally.iter().map(|(name, n)| format!("{name} {n}")));
    parts.join(", ")
}

/// " — <result>; <resultClose>" from the case's own report file, if readable.
fn explanation(outdir: &Path, case: &Case) -> String {
    let Some(file) = &case.report_file else {
        return String::new();
    };
    let Ok(text) = std::fs::read_to_string(outdir.join(file)) else {
        return String::new();
    };
    let Ok(record) = serde_json::from_str::<Value>(&text) else {
        return String::new();
    };
    let mut parts = Vec::new();
    if !ACCEPTED.contains(&case.behavior.as_str())
        && let Some(result) = record["result"].as_str()
    {
        parts.push(result);
    }
    if !ACCEPTED.contains(&case.behavior_close.as_str())
        && let Some(result) = record["resultClose"].as_str()
        && !parts.contains(&result)
    {
        parts.push(result);
    }
    let mut text = parts.join("; ");
    if text.chars().count() > 160 {
        text = text.chars().take(157).collect::<String>() + "...";
    }
    if text.is_empty() {
        text
    } else {
        format!(" — {text}")
    }
}
