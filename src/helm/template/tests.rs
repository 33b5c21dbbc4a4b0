use super::Engine;
use serde_json::{json, Value};

fn render(src: &str, dot: Value) -> String {
    let mut e = Engine::new();
    e.add("templates/t.yaml", src)
        .unwrap_or_else(|err| panic!("parse: {err}"));
    e.render("templates/t.yaml", &dot)
        .unwrap_or_else(|err| panic!("render: {err}"))
}

fn render_err(src: &str, dot: Value) -> String {
    let mut e = Engine::new();
    match e.add("templates/t.yaml", src) {
        Err(err) => err.to_string(),
        Ok(()) => e
            .render("templates/t.yaml", &dot)
            .expect_err("render should fail")
            .to_string(),
    }
}

#[test]
fn fields_pipelines_and_defaults() {
    let v = json!({"Values": {"image": {"repository": "ghcr.io/x/podinfo", "tag": "6.0.1"}, "replicas": 2}, "Release": {"Name": "web"}});
    assert_eq!(
        render(
            "image: {{ .Values.image.repository }}:{{ .Values.image.tag }}",
            v.clone()
        ),
        "image: ghcr.io/x/podinfo:6.0.1"
    );
    assert_eq!(
        render("{{ .Values.missing | default \"fallback\" }}", v.clone()),
        "fallback"
    );
    assert_eq!(render("{{ .Values.replicas | default 1 }}", v.clone()), "2");
    assert_eq!(
        render("name: {{ .Release.Name | quote }}", v.clone()),
        "name: \"web\""
    );
    assert_eq!(render("{{ .Values.nothing }}", v.clone()), "");
    assert_eq!(
        render("{{ printf \"%s-%d\" .Release.Name 3 | upper }}", v),
        "WEB-3"
    );
}

#[test]
fn trim_markers_eat_whitespace() {
    let src = "a:\n  {{- if true }}\n  b: 1\n  {{- end }}\nc: 2";
    assert_eq!(render(src, json!({})), "a:\n  b: 1\nc: 2");
    assert_eq!(render("x {{- 1 -}} y", json!({})), "x1y");
}

#[test]
fn if_else_if_and_go_truthiness() {
    let src = "{{ if .a }}A{{ else if .b }}B{{ else }}C{{ end }}";
    assert_eq!(render(src, json!({"a": 1})), "A");
    assert_eq!(render(src, json!({"a": 0, "b": "x"})), "B");
    assert_eq!(render(src, json!({"a": "", "b": []})), "C");
    assert_eq!(render(src, json!({"a": {}, "b": false})), "C");
    assert_eq!(
        render(
            "{{ if and .a (not .b) }}yes{{ end }}",
            json!({"a": true, "b": false})
        ),
        "yes"
    );
    assert_eq!(
        render("{{ if eq .n 3 }}three{{ end }}", json!({"n": 3})),
        "three"
    );
}

#[test]
fn range_over_lists_maps_and_else() {
    assert_eq!(
        render(
            "{{ range $i, $p := .ports }}{{ $i }}={{ $p }};{{ end }}",
            json!({"ports": [80, 443]})
        ),
        "0=80;1=443;"
    );
    // Maps iterate in sorted key order, as in Go.
    assert_eq!(
        render(
            "{{ range $k, $v := .env }}{{ $k }}={{ $v }} {{ end }}",
            json!({"env": {"B": "2", "A": "1"}})
        ),
        "A=1 B=2 "
    );
    assert_eq!(
        render(
            "{{ range .xs }}{{ . }}{{ else }}none{{ end }}",
            json!({"xs": []})
        ),
        "none"
    );
    assert_eq!(
        render(
            "{{ range .xs }}{{ .name }}/{{ $.root }} {{ end }}",
            json!({"xs": [{"name": "a"}, {"name": "b"}], "root": "r"})
        ),
        "a/r b/r "
    );
}

#[test]
fn with_rebinds_dot_and_variables_are_scoped() {
    assert_eq!(
        render(
            "{{ with .Values.svc }}{{ .port }}{{ else }}no{{ end }}",
            json!({"Values": {"svc": {"port": 9898}}})
        ),
        "9898"
    );
    assert_eq!(
        render(
            "{{ with .Values.svc }}{{ .port }}{{ else }}no{{ end }}",
            json!({"Values": {}})
        ),
        "no"
    );
    assert_eq!(
        render(
            "{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}",
            json!({})
        ),
        "2"
    );
    let err = render_err("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}", json!({}));
    assert!(err.contains("undefined variable"), "{err}");
}

#[test]
fn define_template_include_and_tpl() {
    let mut e = Engine::new();
    e.add("templates/_helpers.tpl", "{{- define \"app.name\" -}}{{ .Release.Name }}-app{{- end -}}\n{{- define \"app.labels\" -}}\napp: {{ include \"app.name\" . }}\ntier: web\n{{- end -}}").unwrap();
    e.add("templates/d.yaml", "metadata:\n  name: {{ include \"app.name\" . }}\n  labels:\n    {{- include \"app.labels\" . | nindent 4 }}\n{{ template \"app.name\" . }}\n{{ tpl .Values.msg . }}").unwrap();
    let dot = json!({"Release": {"Name": "web"}, "Values": {"msg": "hello {{ .Release.Name }}"}});
    assert_eq!(e.render("templates/d.yaml", &dot).unwrap(), "metadata:\n  name: web-app\n  labels:\n    app: web-app\n    tier: web\nweb-app\nhello web");
}

#[test]
fn to_yaml_indent_and_dicts() {
    let src = "resources:\n{{ toYaml .Values.resources | indent 2 }}";
    let out = render(
        src,
        json!({"Values": {"resources": {"limits": {"cpu": "100m"}}}}),
    );
    assert_eq!(out, "resources:\n  limits:\n    cpu: 100m");
    assert_eq!(
        render(
            "{{ $d := dict \"a\" 1 \"b\" 2 }}{{ get $d \"b\" }}{{ hasKey $d \"a\" }}",
            json!({})
        ),
        "2true"
    );
    assert_eq!(render("{{ list 1 2 3 | len }}", json!({})), "3");
    assert_eq!(
        render("{{ join \",\" (list \"a\" \"b\") }}", json!({})),
        "a,b"
    );
}

#[test]
fn required_and_unknown_functions_name_file_line_and_column() {
    let err = render_err(
        "a: 1\nb: {{ required \"image.tag is required\" .Values.image.tag }}",
        json!({"Values": {}}),
    );
    assert!(err.contains("templates/t.yaml:2:"), "{err}");
    assert!(err.contains("image.tag is required"), "{err}");
    let err = render_err("a: 1\n\nb: {{ frobnicate 1 }}", json!({}));
    assert!(err.contains("templates/t.yaml:3:"), "{err}");
    assert!(err.contains("frobnicate"), "{err}");
    let err = render_err("{{ if .a }}unclosed", json!({}));
    assert!(err.contains("templates/t.yaml:1:"), "{err}");
}

#[test]
fn print_spaces_like_go_sprint() {
    assert_eq!(
        render(
            "{{ print \"a\" \"b\" }}|{{ print 1 2 }}|{{ print \"a\" 1 }}|{{ println \"x\" 2 }}",
            json!({})
        ),
        "ab|1 2|a1|x 2\n"
    );
}

/// Renders on a thread with tokio's blocking-thread stack (2 MiB), where the sync
/// renders charts: a stack overflow there aborts the process.
fn render_err_small_stack(src: &str, dot: Value) -> String {
    let src = src.to_string();
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || render_err(&src, dot))
        .expect("spawn")
        .join()
        .expect("no panic")
}

#[test]
fn functions_check_their_arity_with_file_line_col() {
    for (src, want) in [
        ("x\n  {{ index }}", "templates/t.yaml:2:3: wrong number of args for index: want at least 1 got 0 in {{ index }}"),
        ("{{ without }}", "templates/t.yaml:1:1: wrong number of args for without: want at least 1 got 0"),
        ("{{ pick }}", "wrong number of args for pick: want at least 1 got 0"),
        ("{{ omit }}", "wrong number of args for omit: want at least 1 got 0"),
        ("{{ merge }}", "wrong number of args for merge: want at least 1 got 0"),
        ("{{ quote | upper \"a\" }}", "wrong number of args for upper: want 1 got 2"),
        ("{{ include \"x\" }}", "wrong number of args for include: want 2 got 1"),
        ("{{ tpl }}", "wrong number of args for tpl: want 2 got 0"),
        ("{{ default }}", "wrong number of args for default: want 1 to 2 got 0"),
    ] {
        let got = render_err(src, json!({}));
        assert!(got.contains(want), "{src}: {got}");
        assert!(got.starts_with("templates/t.yaml:"), "{src}: {got}");
    }
}

#[test]
fn empty_parentheses_are_an_error_not_a_panic() {
    let got = render_err("{{ ( ) }}", json!({}));
    assert!(
        got.contains("missing value in parenthesized pipeline"),
        "{got}"
    );
    let got = render_err("{{ print (|) }}", json!({}));
    assert!(got.starts_with("templates/t.yaml:1:1:"), "{got}");
}

#[test]
fn self_including_templates_stop_at_the_depth_limit() {
    let got = render_err_small_stack(
        r#"{{ define "loop" }}{{ include "loop" . }}{{ end }}{{ include "loop" . }}"#,
        json!({}),
    );
    assert!(
        got.contains(
            "rendering template has a nested reference name: loop: exceeded max depth 200"
        ),
        "{}",
        &got[..got.len().min(500)]
    );
    let got = render_err_small_stack(
        r#"{{ define "t" }}{{ template "t" . }}{{ end }}{{ template "t" . }}"#,
        json!({}),
    );
    assert!(
        got.contains("nested reference name: t"),
        "{}",
        &got[..got.len().min(500)]
    );
}

#[test]
fn self_including_tpl_stops_at_the_depth_limit() {
    let got = render_err_small_stack(
        "{{ tpl .Values.t . }}",
        json!({"Values": {"t": "{{ tpl .Values.t . }}"}}),
    );
    assert!(
        got.starts_with("templates/t.yaml:1:1: "),
        "{}",
        &got[..got.len().min(300)]
    );
    assert!(
        got.contains("exceeded maximum template depth (200)"),
        "{}",
        &got[..got.len().min(300)]
    );
}

#[test]
fn deepest_render_fits_its_stack() {
    // Every kind of nesting at once, each as deep as the parser allows, inside
    // includes as deep as execution allows.
    let blocks = "{{ if true }}".repeat(99)
        + "{{ print "
        + &"(".repeat(99)
        + "1"
        + &")".repeat(99)
        + " }}"
        + &"{{ end }}".repeat(99);
    let src = format!(
        "{{{{ define \"d\" }}}}{blocks}{{{{ include \"d\" . }}}}{{{{ end }}}}{{{{ include \"d\" . }}}}"
    );
    let got = render_err_small_stack(&src, json!({}));
    assert!(
        got.contains("exceeded maximum template depth (200)"),
        "{}",
        &got[..got.len().min(300)]
    );
    let tpl = "{{ with $ }}".repeat(90) + "{{ tpl $.Values.t $ }}" + &"{{ end }}".repeat(90);
    let got = render_err_small_stack("{{ tpl .Values.t . }}", json!({"Values": {"t": tpl}}));
    assert!(
        got.contains("exceeded maximum template depth (200)"),
        "{}",
        &got[..got.len().min(300)]
    );
}

#[test]
fn parser_bounds_block_and_parenthesis_nesting() {
    let got = render_err(
        &("{{ if true }}".repeat(200) + &"{{ end }}".repeat(200)),
        json!({}),
    );
    assert!(got.contains("blocks nest deeper than 100"), "{got}");
    let got = render_err(
        &format!("{{{{ print {}1{} }}}}", "(".repeat(200), ")".repeat(200)),
        json!({}),
    );
    assert!(got.contains("parentheses nest deeper than 100"), "{got}");
    // Deeper than any stack, still just an error.
    let got = render_err_small_stack(&"{{ if true }}".repeat(1_000_000), json!({}));
    assert!(got.contains("blocks nest deeper than 100"), "{got}");
}

#[test]
fn generators_and_loops_have_caps() {
    let got = render_err("{{ until 100000000 }}", json!({}));
    assert!(
        got.contains("until: 100000000 items would exceed the limit of 1000000"),
        "{got}"
    );
    let got = render_err("{{ untilStep 0 9223372036854775807 1 }}", json!({}));
    assert!(got.contains("would exceed the limit"), "{got}");
    let got = render_err("{{ repeat 1000000000000 \"ab\" }}", json!({}));
    assert!(
        got.contains("repeat: result of 2000000000000 bytes would exceed the limit"),
        "{got}"
    );
    let got = render_err("{{ indent 1000000000 \"a\" }}", json!({}));
    assert!(got.contains("indent: result of"), "{got}");
    let got = render_err("{{ range 100000000 }}{{ end }}", json!({}));
    assert!(got.contains("exceeds the limit of 1000000 items"), "{got}");
    let got = render_err("{{ printf \"%.999999999f\" 1.0 }}", json!({}));
    assert!(got.contains("precision"), "{got}");
    // Doubling a string in a loop stops at the text limit.
    let got = render_err(
        "{{ $s := \"ab\" }}{{ range until 64 }}{{ $s = printf \"%s%s\" $s $s }}{{ end }}",
        json!({}),
    );
    assert!(got.contains("exceed the limit of 33554432"), "{got}");
    // Sprig counts down for a negative count.
    assert_eq!(render("{{ until -3 }}", json!({})), "[0 -1 -2]");
    assert_eq!(render("{{ untilStep 1 10 4 }}", json!({})), "[1 5 9]");
}

#[test]
fn nested_loops_stop_at_the_step_limit() {
    // Instead of running for hours.
    let got = render_err(
        "{{ range until 100000 }}{{ range until 100000 }}{{ end }}{{ end }}",
        json!({}),
    );
    assert!(
        got.contains("rendering took more than 10000000 steps"),
        "{got}"
    );
}

#[test]
fn built_values_have_a_nesting_cap() {
    let got = render_err_small_stack(
        "{{ $x := list }}{{ range until 1000 }}{{ $x = list $x }}{{ end }}{{ toJson $x }}",
        json!({}),
    );
    assert!(
        got.contains("list: the value would nest deeper than 256"),
        "{got}"
    );
    let got = render_err(
        "{{ $x := dict }}{{ range until 1000 }}{{ $x = dict \"a\" $x }}{{ end }}",
        json!({}),
    );
    assert!(
        got.contains("dict: the value would nest deeper than 256"),
        "{got}"
    );
}

#[test]
fn trunc_of_the_smallest_integer_does_not_overflow() {
    assert_eq!(
        render("{{ trunc -9223372036854775808 \"abc\" }}", json!({})),
        "abc"
    );
}
