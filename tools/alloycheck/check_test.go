package main

import (
	"fmt"
	"strings"
	"testing"
)

const good = `discovery.kubernetes "pods" {
  role = "pod"
}

loki.source.kubernetes "pods" {
  targets    = discovery.kubernetes.pods.targets
  forward_to = [loki.write.default.receiver]
}

loki.write "default" {
  endpoint {
    url = "http://loki:3100/loki/api/v1/push"
  }
}
`

func TestAcceptsAWiredPipeline(t *testing.T) {
	if found := Check("config.alloy", []byte(good)); len(found) != 0 {
		t.Fatalf("refused: %v", found)
	}
}

func TestRefuses(t *testing.T) {
	for _, c := range []struct{ old, new, want string }{
		{`role = "pod"`, `rol = "pod"`, `config.alloy:2:3: discovery.kubernetes.pods: unrecognized attribute name "rol"`},
		{`role = "pod"`, `role = ["pod"]`, `should be string, got array`},
		{`role = "pod"`, ``, `missing required attribute "role"`},
		{`default.receiver`, `other.receiver`, `config.alloy:7:17: loki.write.other.receiver refers to a component that is not declared`},
		{`pods.targets`, `pods.output`, `has no export "output" (exports: targets)`},
		{`loki.write "default"`, `loki.writer "default"`, `unknown component "loki.writer"`},
		{`endpoint {`, `endpoint {{`, `config.alloy:11:13: expected identifier`},
	} {
		found := Check("config.alloy", []byte(strings.Replace(good, c.old, c.new, 1)))
		if !strings.Contains(fmt.Sprint(found), c.want) {
			t.Errorf("%q -> %q: got %v, want %q", c.old, c.new, found, c.want)
		}
	}
}
