package main

import (
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

// spec is a command resource's inputs (or the inputs kept in its state), as the runners use them.
type spec struct {
	remote         bool
	create, update *string
	delete         *string
	stdin          *string
	environment    map[string]string
	interpreter    []string // local only; nil means /bin/sh -c
	dir            *string  // local only; nil means the provider's working directory
	addPrevious    bool     // PULUMI_COMMAND_STDOUT/STDERR from the previous create or update
	logStdout      bool
	logStderr      bool
	conn           *connection // remote only; nil while the connection is not known
	// Whether what the command prints must be treated as secret: it runs a secret script, reads a
	// secret stdin, or sees a secret in its environment, interpreter or directory.
	secretOutput bool
	secrets      []string // every secret string among those inputs, never printed
}

type connection struct {
	host               string
	port               int
	user               string
	password           *string
	privateKey         *string
	privateKeyPassword *string
	agentSocketPath    *string
	hostKey            *string
	dialErrorLimit     int // below 0: no limit
	perDialTimeout     int // seconds; 0: no limit
}

// Inputs whose secrets reach what the command prints (the connection's do not).
var outputSources = []string{"create", "update", "delete", "stdin", "environment", "interpreter", "dir"}

func parseSpec(typ string, m resource.PropertyMap) (*spec, error) {
	s := &spec{
		remote:      typ == remoteCommand,
		create:      str(m, "create"),
		update:      str(m, "update"),
		delete:      str(m, "delete"),
		stdin:       str(m, "stdin"),
		environment: stringMap(m, "environment"),
		addPrevious: true,
		logStdout:   true,
		logStderr:   true,
	}
	if b := boolean(m, "addPreviousOutputInEnv"); b != nil {
		s.addPrevious = *b
	}
	if l := str(m, "logging"); l != nil {
		s.logStdout = *l == "stdout" || *l == "stdoutAndStderr"
		s.logStderr = *l == "stderr" || *l == "stdoutAndStderr"
	}
	for _, k := range outputSources {
		if v, ok := m[resource.PropertyKey(k)]; ok {
			if v.ContainsSecrets() {
				s.secretOutput = true
			}
			secretStrings(v, false, &s.secrets)
		}
	}
	if !s.remote {
		s.interpreter = stringList(m, "interpreter")
		s.dir = str(m, "dir")
		return s, nil
	}
	// A connection not known yet (during a preview) leaves conn nil; a run needs it.
	c := object(m, "connection")
	host := str(c, "host")
	if c == nil || host == nil {
		return s, nil
	}
	conn := &connection{
		host:               *host,
		port:               22,
		user:               "root",
		password:           str(c, "password"),
		privateKey:         str(c, "privateKey"),
		privateKeyPassword: str(c, "privateKeyPassword"),
		agentSocketPath:    str(c, "agentSocketPath"),
		hostKey:            str(c, "hostKey"),
		dialErrorLimit:     10,
		perDialTimeout:     15,
	}
	if p := number(c, "port"); p != nil {
		conn.port = int(*p)
	}
	if u := str(c, "user"); u != nil {
		conn.user = *u
	}
	if n := number(c, "dialErrorLimit"); n != nil {
		conn.dialErrorLimit = int(*n)
	}
	if n := number(c, "perDialTimeout"); n != nil {
		conn.perDialTimeout = int(*n)
	}
	s.conn = conn
	return s, nil
}
