package main

import (
	"bytes"
	"io"
	"sort"
	"strings"
	"sync"
)

const redacted = "[secret]"

// redactor hides secret strings in text meant for the engine's log or an error message: each whole
// secret value, and each line of a multi-line one (a script that echoes one line of a secret file must
// not show it either). Lines shorter than 4 characters are left alone: "}" or "fi" would blank out
// ordinary text.
type redactor struct{ needles []string }

func newRedactor(secrets []string) *redactor {
	seen := map[string]bool{}
	var needles []string
	add := func(s string, min int) {
		if len(s) >= min && !seen[s] {
			seen[s] = true
			needles = append(needles, s)
		}
	}
	for _, s := range secrets {
		add(strings.TrimRight(s, "\r\n"), 1)
		for _, line := range strings.Split(s, "\n") {
			add(strings.TrimSpace(line), 4)
		}
	}
	// Longest first, so that a whole value goes before the lines it holds.
	sort.SliceStable(needles, func(i, j int) bool { return len(needles[i]) > len(needles[j]) })
	return &redactor{needles: needles}
}

func (r *redactor) apply(s string) string {
	if r == nil {
		return s
	}
	for _, n := range r.needles {
		s = strings.ReplaceAll(s, n, redacted)
	}
	return s
}

// lockedBuffer is written by the stdout and the stderr copier at once.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lineLogger hands each complete line written to it to log, redacted.
type lineLogger struct {
	mu      sync.Mutex
	pending []byte
	log     func(string)
	redact  *redactor
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pending = append(l.pending, p...)
	for {
		i := bytes.IndexByte(l.pending, '\n')
		if i < 0 {
			break
		}
		l.emit(string(l.pending[:i]))
		l.pending = l.pending[i+1:]
	}
	return len(p), nil
}

func (l *lineLogger) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pending) > 0 {
		l.emit(string(l.pending))
		l.pending = nil
	}
}

func (l *lineLogger) emit(line string) {
	if l.log != nil {
		l.log(l.redact.apply(strings.TrimSuffix(line, "\r")))
	}
}

// captured is what a run of one command printed.
type captured struct {
	stdout, stderr bytes.Buffer
	both           lockedBuffer // both streams as they came, for an error message
	logger         *lineLogger
}

// writers: where the command's stdout and stderr go (the logger only for the streams the
// resource's `logging` asks for, and never for a secret script).
func (c *captured) writers(s *spec, command string, log func(string), r *redactor) (io.Writer, io.Writer) {
	if isSecretCommand(s, command) {
		log = nil
	}
	c.logger = &lineLogger{log: log, redact: r}
	out := []io.Writer{&c.stdout, &c.both}
	errw := []io.Writer{&c.stderr, &c.both}
	if s.logStdout {
		out = append(out, c.logger)
	}
	if s.logStderr {
		errw = append(errw, c.logger)
	}
	return io.MultiWriter(out...), io.MultiWriter(errw...)
}

// results: stdout and stderr as pulumi-command stores them, with one trailing newline removed.
func (c *captured) results() (string, string) {
	c.logger.Flush()
	return strings.TrimSuffix(c.stdout.String(), "\n"), strings.TrimSuffix(c.stderr.String(), "\n")
}
