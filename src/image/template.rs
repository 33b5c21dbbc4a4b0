//! The part of Go `text/template` that Flux's `messageTemplate` examples use:
//! `{{range .Changed.Changes}}` with `.OldValue`, `.NewValue` and `.Setter`,
//! `{{ .AutomationObject }}`, and `{{-`/`-}}` trimming. Anything else is an error naming
//! the unsupported action, so a commit message is never silently wrong.

/// One change, as the template sees it.
pub struct TemplateChange {
    /// Old value.
    pub old_value: String,
    /// New value.
    pub new_value: String,
    /// The setter (`namespace:name` of the policy, or the annotation).
    pub setter: String,
}

enum Tok<'a> {
    Text(&'a str),
    Action(&'a str),
}

fn tokens(t: &str) -> Result<Vec<Tok<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(i) = rest.find("{{") {
        out.push(Tok::Text(&rest[..i]));
        let j = rest[i..]
            .find("}}")
            .ok_or_else(|| "unclosed action: missing }}".to_string())?
            + i;
        out.push(Tok::Action(&rest[i + 2..j]));
        rest = &rest[j + 2..];
    }
    out.push(Tok::Text(rest));
    // Trimming: `{{-` trims the text before, `-}}` the text after.
    let mut trimmed = Vec::with_capacity(out.len());
    let mut trim_next = false;
    for (i, tok) in out.iter().enumerate() {
        match tok {
            Tok::Text(s) => {
                let mut s: &str = s;
                if trim_next {
                    s = s.trim_start();
                }
                if let Some(Tok::Action(a)) = out.get(i + 1) {
                    if a.starts_with('-') {
                        s = s.trim_end();
                    }
                }
                trimmed.push(Tok::Text(s));
                trim_next = false;
            }
            Tok::Action(a) => {
                trim_next = a.ends_with('-');
                trimmed.push(Tok::Action(
                    a.trim_start_matches('-').trim_end_matches('-').trim(),
                ));
            }
        }
    }
    Ok(trimmed)
}

/// Renders `template` for an automation named `object` and its changes.
pub fn render(template: &str, object: &str, changes: &[TemplateChange]) -> Result<String, String> {
    let toks = tokens(template)?;
    let mut out = String::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Text(s) => out.push_str(s),
            Tok::Action(".AutomationObject") => out.push_str(object),
            Tok::Action(a) if a.starts_with("range ") && a[6..].trim() == ".Changed.Changes" => {
                let end = toks[i + 1..]
                    .iter()
                    .position(|t| matches!(t, Tok::Action("end")))
                    .ok_or_else(|| "{{range}} without {{end}}".to_string())?
                    + i
                    + 1;
                for c in changes {
                    for t in &toks[i + 1..end] {
                        match t {
                            Tok::Text(s) => out.push_str(s),
                            Tok::Action(".OldValue") => out.push_str(&c.old_value),
                            Tok::Action(".NewValue") => out.push_str(&c.new_value),
                            Tok::Action(".Setter") => out.push_str(&c.setter),
                            Tok::Action(other) => {
                                return Err(format!(
                                    "unsupported template syntax {{{{ {other} }}}} inside range"
                                ))
                            }
                        }
                    }
                }
                i = end;
            }
            Tok::Action(other) => {
                return Err(format!("unsupported template syntax {{{{ {other} }}}}"))
            }
        }
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_flux_style_template() {
        let t = "Automated update by {{ .AutomationObject }}\n\n{{range .Changed.Changes -}}\n- {{.OldValue}} -> {{.NewValue}} ({{.Setter}})\n{{end -}}\n";
        let c = vec![TemplateChange {
            old_value: "a:1".into(),
            new_value: "a:2".into(),
            setter: "ns:p".into(),
        }];
        assert_eq!(
            render(t, "flux-system/auto", &c).unwrap(),
            "Automated update by flux-system/auto\n\n- a:1 -> a:2 (ns:p)\n"
        );
        assert_eq!(
            render("{{ .Changed.FileChanges }}", "x", &c).unwrap_err(),
            "unsupported template syntax {{ .Changed.FileChanges }}"
        );
        assert!(render("{{range .Changed.Changes}}x", "x", &c).is_err());
    }
}
