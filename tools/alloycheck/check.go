package main

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/grafana/alloy/syntax/ast"
	"github.com/grafana/alloy/syntax/diag"
	"github.com/grafana/alloy/syntax/parser"
	"github.com/grafana/alloy/syntax/token"
	"github.com/grafana/alloy/syntax/vm"
)

// Problem is one refusal, at the place in the file it concerns.
type Problem struct {
	Pos token.Position
	Msg string
}

func (p Problem) String() string { return fmt.Sprintf("%s: %s", p.Pos, p.Msg) }

// declared is one component block of the file.
type declared struct {
	name, label string
	block       *ast.BlockStmt
	spec        Component
}

func (d declared) id() string { return d.name + "." + d.label }

// Check parses src with Alloy's parser, then decodes every component block with Alloy's evaluator into
// the documented arguments, against a scope holding the documented exports of the components the file
// declares, so a reference to anything else fails as it would when Alloy loads the file.
func Check(filename string, src []byte) []Problem {
	f, err := parser.ParseFile(filename, src)
	if err != nil {
		return problems(err, token.Position{Filename: filename}, "")
	}
	var out []Problem
	var decls []declared
	seen := map[string]declared{}
	for _, stmt := range f.Body {
		block, ok := stmt.(*ast.BlockStmt)
		if !ok {
			out = append(out, Problem{ast.StartPos(stmt).Position(), "only component blocks may appear at the top level"})
			continue
		}
		d := declared{name: strings.Join(block.Name, "."), label: block.Label, block: block}
		pos := block.NamePos.Position()
		spec, known := components[d.name]
		switch {
		case !known:
			out = append(out, Problem{pos, fmt.Sprintf("unknown component %q (known: %s)", d.name, knownNames())})
			continue
		case d.label == "":
			out = append(out, Problem{pos, fmt.Sprintf("component %q needs a label", d.name)})
			continue
		}
		if first, dup := seen[d.id()]; dup {
			out = append(out, Problem{pos, fmt.Sprintf("%s is declared again (first at line %d)", d.id(), first.block.NamePos.Position().Line)})
			continue
		}
		d.spec = spec
		seen[d.id()] = d
		decls = append(decls, d)
	}
	scope := exportsScope(decls)
	for _, d := range decls {
		if refs := checkReferences(d, decls); len(refs) > 0 {
			out = append(out, refs...) // evaluating would only repeat them, less clearly
			continue
		}
		if err := vm.New(d.block.Body).Evaluate(scope, d.spec.Args()); err != nil {
			out = append(out, problems(err, d.block.NamePos.Position(), d.id()+": ")...)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Pos.Line < out[j].Pos.Line })
	return out
}

// exportsScope nests each component's exports under its dotted name and label, so that
// `loki.write.default.receiver` evaluates as Alloy evaluates it: field accesses on objects.
func exportsScope(decls []declared) *vm.Scope {
	root := map[string]any{}
	for _, d := range decls {
		m := root
		for _, part := range strings.Split(d.name, ".") {
			next, ok := m[part].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[part] = next
			}
			m = next
		}
		m[d.label] = d.spec.Exports(d.id())
	}
	return &vm.Scope{Variables: root}
}

// checkReferences reports every reference in d's body to a component that the file does not declare,
// or to an export the component does not have.
func checkReferences(d declared, decls []declared) []Problem {
	var out []Problem
	ast.Walk(visitor(func(n ast.Node) bool {
		access, ok := n.(*ast.AccessExpr)
		if !ok {
			return true
		}
		path, ok := dotted(access)
		if !ok {
			return true
		}
		if !componentNamespace(path[0]) {
			return false // not a component reference: the evaluator resolves it (or refuses it)
		}
		pos := ast.StartPos(access).Position()
		ref := strings.Join(path, ".")
		for _, other := range decls {
			parts := append(strings.Split(other.name, "."), other.label)
			if len(path) < len(parts) || strings.Join(path[:len(parts)], ".") != other.id() {
				continue
			}
			exports := exportNames(other.spec.Exports(other.id()))
			if len(path) > len(parts) && !contains(exports, path[len(parts)]) {
				out = append(out, Problem{pos, fmt.Sprintf("%s: %s has no export %q (exports: %s)",
					ref, other.id(), path[len(parts)], listOrNone(exports))})
			}
			return false
		}
		out = append(out, Problem{pos, fmt.Sprintf("%s refers to a component that is not declared in this file", ref)})
		return false
	}), d.block.Body)
	return out
}

// dotted turns a.b.c.d into [a b c d]; false for anything else (an index, a call).
func dotted(e ast.Expr) ([]string, bool) {
	switch e := e.(type) {
	case *ast.IdentifierExpr:
		return []string{e.Ident.Name}, true
	case *ast.AccessExpr:
		head, ok := dotted(e.Value)
		return append(head, e.Name.Name), ok
	}
	return nil, false
}

func componentNamespace(first string) bool {
	for name := range components {
		if strings.HasPrefix(name, first+".") {
			return true
		}
	}
	return false
}

// exportNames reads the names of the `alloy:"..."` tags of an exports struct.
func exportNames(v any) []string {
	var names []string
	t := reflect.TypeOf(v)
	for i := 0; i < t.NumField(); i++ {
		if tag, ok := t.Field(i).Tag.Lookup("alloy"); ok {
			names = append(names, strings.Split(tag, ",")[0])
		}
	}
	return names
}

// problems turns the parser's and the evaluator's errors into Problems; an error that carries no
// position (a missing required argument, a failed validation) is placed at the component's name.
func problems(err error, at token.Position, prefix string) []Problem {
	var ds diag.Diagnostics
	if errors.As(err, &ds) {
		var out []Problem
		for _, d := range ds {
			pos := d.StartPos
			if !pos.Valid() {
				pos = at
			}
			msg := prefix + d.Message
			if d.Value != "" {
				msg += " (value: " + d.Value + ")"
			}
			out = append(out, Problem{pos, msg})
		}
		return out
	}
	return []Problem{{at, prefix + err.Error()}}
}

type visitor func(ast.Node) bool

func (v visitor) Visit(n ast.Node) ast.Visitor {
	if n == nil || !v(n) {
		return nil
	}
	return v
}

func knownNames() string {
	var names []string
	for name := range components {
		names = append(names, name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func listOrNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, ", ")
}
