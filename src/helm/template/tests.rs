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
