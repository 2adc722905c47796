package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Environment variables that carry the previous create's or update's output into the next run.
const (
	envStdout = "PULUMI_COMMAND_STDOUT"
	envStderr = "PULUMI_COMMAND_STDERR"
)

// previous is what the last create or update printed (empty before the first run).
type previous struct{ stdout, stderr string }

// runLocal runs command through the interpreter (default /bin/sh -c) on this machine, in dir (default:
// the provider's working directory, the project's), with the provider's environment plus
// `environment` and, unless addPreviousOutputInEnv is false, PULUMI_COMMAND_STDOUT/STDERR when the
// previous run printed something. stdin, when not empty, is the command's standard input.
func runLocal(ctx context.Context, s *spec, command string, prev previous, log func(string)) (string, string, error) {
	args := []string{"/bin/sh", "-c"}
	if len(s.interpreter) > 0 {
		args = append([]string(nil), s.interpreter...)
	}
	args = append(args, command)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	if s.dir != nil {
		cmd.Dir = *s.dir
	} else {
		wd, err := os.Getwd()
		if err != nil {
			return "", "", err
		}
		cmd.Dir = wd
	}
	cmd.Env = os.Environ()
	for _, k := range sortedKeys(s.environment) {
		cmd.Env = append(cmd.Env, k+"="+s.environment[k])
	}
	if s.addPrevious {
		if prev.stdout != "" {
			cmd.Env = append(cmd.Env, envStdout+"="+prev.stdout)
		}
		if prev.stderr != "" {
			cmd.Env = append(cmd.Env, envStderr+"="+prev.stderr)
		}
	}
	if s.stdin != nil && *s.stdin != "" {
		cmd.Stdin = strings.NewReader(*s.stdin)
	}
	r := newRedactor(s.secrets)
	var c captured
	cmd.Stdout, cmd.Stderr = c.writers(s, command, log, r)
	err := cmd.Run()
	stdout, stderr := c.results()
	if err != nil {
		return "", "", failure(err, s, command, c.both.String(), r)
	}
	return stdout, stderr, nil
}

// failure: the error of a command that did not succeed, with what it printed, secrets blanked out. A
// secret script is neither quoted nor its output shown: what it prints may be pieces of itself (a
// trace, an echo) that no blanking of whole values would catch.
func failure(err error, s *spec, command, output string, r *redactor) error {
	if isSecretCommand(s, command) {
		return fmt.Errorf("%v: running %s (the command is secret, so its output is not shown)",
			r.apply(err.Error()), redacted)
	}
	return fmt.Errorf("%v: running %q:\n%s", r.apply(err.Error()), command, r.apply(output))
}

func isSecretCommand(s *spec, command string) bool {
	for _, sec := range s.secrets {
		if sec == command {
			return true
		}
	}
	return false
}
