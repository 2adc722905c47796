package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// hostKeyError: the server is not the host that connection.hostKey pins. Never retried: another try
// reaches the same server.
type hostKeyError struct {
	addr      string
	want, got ssh.PublicKey
	noKeyType bool // the server has no host key of the pinned type at all
}

func (e *hostKeyError) Error() string {
	if e.noKeyType {
		return fmt.Sprintf("host key verification failed for %s: the server offers no %s host key, "+
			"and connection.hostKey pins %s %s; refusing to connect, nothing was run",
			e.addr, e.want.Type(), e.want.Type(), ssh.FingerprintSHA256(e.want))
	}
	return fmt.Sprintf("host key verification failed for %s: the server presented %s %s, but "+
		"connection.hostKey pins %s %s; refusing to connect, nothing was run",
		e.addr, e.got.Type(), ssh.FingerprintSHA256(e.got), e.want.Type(), ssh.FingerprintSHA256(e.want))
}

// hostKeyAlgorithms: what to ask the server for when a key of this type is pinned. An RSA key
// signs with SHA-2 on any current server.
func hostKeyAlgorithms(keyType string) []string {
	if keyType == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{keyType}
}

// clientConfig: the SSH client settings of a connection. Authentication, as pulumi-command does it:
// the private key (decrypted with privateKeyPassword), then the password (also for
// keyboard-interactive), then the agent at agentSocketPath or $SSH_AUTH_SOCK. Also returned: the
// pinned host key (nil when none is), and a closer that releases the agent connection.
func clientConfig(c *connection) (cfg *ssh.ClientConfig, want ssh.PublicKey, closer func(), err error) {
	cfg = &ssh.ClientConfig{User: c.user}
	closer = func() {}
	if c.hostKey != nil {
		if want, err = parseHostKey(*c.hostKey); err != nil {
			return nil, nil, closer, err
		}
		cfg.HostKeyAlgorithms = hostKeyAlgorithms(want.Type())
		cfg.HostKeyCallback = func(hostname string, _ net.Addr, got ssh.PublicKey) error {
			if bytes.Equal(got.Marshal(), want.Marshal()) {
				return nil
			}
			return &hostKeyError{addr: hostname, want: want, got: got}
		}
	} else {
		// pulumi-command 1.2.1: without hostKey, any host key is accepted.
		cfg.HostKeyCallback = ssh.InsecureIgnoreHostKey() //nolint:gosec // the user chose not to pin one
	}
	if c.privateKey != nil {
		var signer ssh.Signer
		if c.privateKeyPassword != nil {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(*c.privateKey), []byte(*c.privateKeyPassword))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(*c.privateKey))
		}
		if err != nil {
			return nil, nil, closer, fmt.Errorf("connection.privateKey cannot be used: %v", err)
		}
		cfg.Auth = append(cfg.Auth, ssh.PublicKeys(signer))
	}
	if c.password != nil {
		pw := *c.password
		cfg.Auth = append(cfg.Auth, ssh.Password(pw),
			ssh.KeyboardInteractive(func(_, _ string, questions []string, _ []bool) ([]string, error) {
				answers := make([]string, len(questions))
				for i := range answers {
					answers[i] = pw
				}
				return answers, nil
			}))
	}
	sock := os.Getenv("SSH_AUTH_SOCK")
	if c.agentSocketPath != nil {
		sock = *c.agentSocketPath
	}
	if sock != "" {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			return nil, nil, closer, fmt.Errorf("the SSH agent at %s cannot be reached: %v", sock, err)
		}
		closer = func() { conn.Close() }
		cfg.Auth = append(cfg.Auth, ssh.PublicKeysCallback(agent.NewClient(conn).Signers))
	}
	return cfg, want, closer, nil
}

// dialOnce: one TCP connection and SSH handshake, both within timeout (0: no limit). want is the
// pinned host key, or nil.
func dialOnce(ctx context.Context, addr string, cfg *ssh.ClientConfig, want ssh.PublicKey,
	timeout time.Duration) (*ssh.Client, error) {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if timeout > 0 {
		_ = conn.SetDeadline(time.Now().Add(timeout))
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	sc, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		var hk *hostKeyError
		if errors.As(err, &hk) {
			return nil, &permanent{hk}
		}
		var neg *ssh.AlgorithmNegotiationError
		if errors.As(err, &neg) && neg.What == "host key" && want != nil {
			return nil, &permanent{&hostKeyError{addr: addr, want: want, noKeyType: true}}
		}
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(sc, chans, reqs), nil
}

// dialer opens a connection's SSH session with pulumi-command's retries: up to dialErrorLimit failed
// tries after the first (below 0: no limit), each within perDialTimeout seconds, on the backoff
// schedule. A host key that does not match fails at once.
type dialer struct {
	sleep  func(context.Context, time.Duration) error
	status func(string)
}

func (d dialer) dial(ctx context.Context, c *connection) (*ssh.Client, error) {
	cfg, want, release, err := clientConfig(c)
	if err != nil {
		return nil, err
	}
	defer release()
	addr := net.JoinHostPort(c.host, strconv.Itoa(c.port))
	timeout := time.Duration(c.perDialTimeout) * time.Second
	of := " (no limit)"
	if c.dialErrorLimit >= 0 {
		of = " of " + strconv.Itoa(c.dialErrorLimit+1)
	}
	sleep := d.sleep
	if sleep == nil {
		sleep = sleepCtx
	}
	return retry(ctx, c.dialErrorLimit, sleep,
		func(int) (*ssh.Client, error) { return dialOnce(ctx, addr, cfg, want, timeout) },
		func(n int, err error, wait time.Duration) {
			if d.status != nil {
				d.status(fmt.Sprintf("dial %s: try %d%s failed (%v); retrying in %v", addr, n, of, err, wait))
			}
		})
}

// runRemote runs command in one SSH session on the connection's host: `environment` through the
// session's Setenv (sshd must AcceptEnv each name), PULUMI_COMMAND_STDOUT/STDERR likewise but only
// warned about when refused, stdin when not empty.
func runRemote(ctx context.Context, d dialer, s *spec, command string, prev previous,
	log func(string), warn func(string)) (string, string, error) {
	if s.conn == nil {
		return "", "", fmt.Errorf("the command's connection has no host (or is not known)")
	}
	client, err := d.dial(ctx, s.conn)
	if err != nil {
		return "", "", err
	}
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		return "", "", fmt.Errorf("opening an SSH session on %s: %w", s.conn.host, err)
	}
	defer session.Close()
	for _, k := range sortedKeys(s.environment) {
		if err := session.Setenv(k, s.environment[k]); err != nil {
			return "", "", fmt.Errorf("could not set environment variable %q on %s: %w (the host's sshd "+
				"passes only the variables its AcceptEnv names; or prefix the command with VAR=value)",
				k, s.conn.host, err)
		}
	}
	if s.addPrevious {
		for _, kv := range [][2]string{{envStdout, prev.stdout}, {envStderr, prev.stderr}} {
			if kv[1] == "" {
				continue
			}
			if err := session.Setenv(kv[0], kv[1]); err != nil && warn != nil {
				warn(fmt.Sprintf("could not set %s on %s (its sshd does not AcceptEnv it); the command "+
					"runs without it", kv[0], s.conn.host))
			}
		}
	}
	if s.stdin != nil && *s.stdin != "" {
		session.Stdin = strings.NewReader(*s.stdin)
	}
	r := newRedactor(s.secrets)
	var c captured
	session.Stdout, session.Stderr = c.writers(s, command, log, r)
	done := make(chan error, 1)
	go func() { done <- session.Run(command) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		client.Close()
		<-done
		err = ctx.Err()
	}
	stdout, stderr := c.results()
	if err != nil {
		return "", "", failure(err, s, command, c.both.String(), r)
	}
	return stdout, stderr, nil
}
