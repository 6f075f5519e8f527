package secrets

import (
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing/filemode"

	"github.com/agentgitops/reconciler/gitstore"
)

// token returns a credential-shaped value: prefix and n random letters and
// digits from seed. Tests build their secrets at run time so that this
// repository itself holds none a scanner would flag.
func token(prefix string, n int, seed uint64) string {
	const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := []byte(prefix)
	for range n {
		b = append(b, alnum[r.IntN(len(alnum))])
	}
	return string(b)
}

func added(path, content string) gitstore.FileChange {
	return gitstore.FileChange{Path: path, Status: gitstore.StatusAdded, Mode: filemode.Regular, Content: []byte(content)}
}

// noValue fails the test when the findings hold any 8 bytes of a secret.
func noValue(t *testing.T, fs []Finding, secrets ...string) {
	t.Helper()
	text := fmt.Sprintf("%+v %v", fs, fs)
	for _, s := range secrets {
		for i := 0; i+8 <= len(s); i++ {
			if strings.Contains(text, s[i:i+8]) {
				t.Fatalf("findings hold a fragment of a secret (%q): %s", s[i:i+8], text)
			}
		}
	}
}

func TestScan(t *testing.T) {
	ghp := token("ghp_", 36, 1)
	apiKey := "sk-test-" + token("", 40, 2)
	awsID := "AKIA" + strings.Map(func(r rune) rune { // base32: A-Z, 2-7
		if r >= 'a' && r <= 'z' || r == '0' || r == '1' || r == '8' || r == '9' {
			return 'A' + (r % 26)
		}
		return r
	}, token("", 16, 3))
	pem := "-----BEGIN RSA PRIVATE KEY-----\n" + token("", 64, 4) + "\n" + token("", 64, 5) + "\n" + token("", 40, 6) + "==\n-----END RSA PRIVATE KEY-----\n"
	tests := []struct {
		name    string
		changes []gitstore.FileChange
		known   []string
		want    []string // Finding.String()
	}{
		{"nothing", []gitstore.FileChange{added("config/a.env", "CACHE_TTL=30s\nREGION=eu-west-1\n")}, []string{apiKey}, nil},
		{"github token", []gitstore.FileChange{added("config/a.env", "A=1\nGITHUB_TOKEN="+ghp+"\n")}, nil,
			[]string{"config/a.env:2 (github-pat)"}},
		{"github token inside a word", []gitstore.FileChange{added("notes.txt", "one\ntwo\nx"+ghp+"y\n")}, nil,
			[]string{"notes.txt:3 (github-pat)"}},
		{"known value", []gitstore.FileChange{added("deploy/staging/app.yaml", "env:\n  value: "+apiKey+"\n")}, []string{apiKey},
			[]string{"deploy/staging/app.yaml:2 (known-secret)"}},
		{"known value trimmed and inside a word", []gitstore.FileChange{added("a.txt", "k=x"+apiKey+"x\n\nagain "+apiKey)}, []string{apiKey + "\n"},
			[]string{"a.txt:1 (known-secret)", "a.txt:3 (known-secret)"}},
		{"short known value ignored", []gitstore.FileChange{added("a.txt", "pin 1234567\n")}, []string{"1234567\n", "", "   "}, nil},
		{"aws access key", []gitstore.FileChange{added("ci/env.sh", "#!/bin/sh\nexport AWS_ACCESS_KEY_ID="+awsID+"\n")}, nil,
			[]string{"ci/env.sh:2 (aws-access-token)"}},
		{"private key", []gitstore.FileChange{added("keys/deploy", "\n"+pem)}, nil,
			[]string{"keys/deploy:2 (private-key)"}},
		{"deleted file skipped", []gitstore.FileChange{{Path: "old.env", Status: gitstore.StatusDeleted}}, nil, nil},
		{"modified file", []gitstore.FileChange{{Path: "m.env", Status: gitstore.StatusModified, Content: []byte("T=" + ghp)}}, nil,
			[]string{"m.env:1 (github-pat)"}},
		{"binary file", []gitstore.FileChange{{Path: "bin/tool", Status: gitstore.StatusAdded, Binary: true,
			Content: []byte("\x7fELF\x00\x01\x02\n\x00\x00" + ghp + "\x00\xff")}}, nil,
			[]string{"bin/tool:2 (github-pat)"}},
		{"symbolic link target", []gitstore.FileChange{{Path: "link", Status: gitstore.StatusAdded, Mode: filemode.Symlink, Content: []byte("../" + apiKey)}}, []string{apiKey},
			[]string{"link:1 (known-secret)"}},
		{"secret in a path", []gitstore.FileChange{added("tokens/"+ghp+".txt", "x\n"), added("k/"+apiKey, "y\n")}, []string{apiKey},
			[]string{"k/[REDACTED] (known-secret)", "tokens/[REDACTED].txt (github-pat)"}},
		{"several, sorted", []gitstore.FileChange{added("z.env", "T="+ghp), added("a.env", "K="+apiKey+"\nT="+ghp)}, []string{apiKey},
			[]string{"a.env:1 (known-secret)", "a.env:2 (github-pat)", "z.env:1 (github-pat)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, err := Scan(tt.changes, tt.known)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range fs {
				got = append(got, f.String())
				if f.Description == "" {
					t.Errorf("%s has no description", f)
				}
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("Scan =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			noValue(t, fs, ghp, apiKey, awsID, pem[32:96])
		})
	}
}

// Content Scan cannot read whole is denied: a file over the file limit,
// and every file past the change's limit.
func TestScanTooLarge(t *testing.T) {
	defer func(l struct{ file, change int }) { limits = l }(limits)
	limits.file, limits.change = 100, 250
	big := strings.Repeat("a", 101)
	fit := strings.Repeat("b\n", 50)
	fs, err := Scan([]gitstore.FileChange{added("big.txt", big), added("c1.txt", fit), added("c2.txt", fit), added("c3.txt", fit), added("c4.txt", fit)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range fs {
		got = append(got, f.String())
	}
	if want := "big.txt (too-large-to-scan) c3.txt (too-large-to-scan) c4.txt (too-large-to-scan)"; strings.Join(got, " ") != want {
		t.Errorf("Scan = %q, want %s", got, want)
	}
	if !strings.Contains(fs[0].Description, "101 bytes") {
		t.Errorf("description: %q", fs[0].Description)
	}
}

// The example repository, and what its agents write, hold no secrets: the
// rules must not deny the ordinary content of a desired-state repository.
func TestScanExampleHasNoFindings(t *testing.T) {
	var changes []gitstore.FileChange
	root := "../examples/repo-layout"
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(root, p)
		changes = append(changes, added(filepath.ToSlash(rel), string(b)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	changes = append(changes, added("deploy/images.lock", "registry.example.com/payments-api@sha256:"+strings.Repeat("0123456789abcdef", 4)+"\n"))
	fs, err := Scan(changes, []string{"sk-test-" + token("", 40, 2)})
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 0 {
		t.Errorf("findings in the example: %v", fs)
	}
}

// typicalFiles returns n changed files of a desired-state repository's
// usual size (a manifest of about 1.5 KB with an image digest, probes,
// environment variables and resources), every 100th with a token.
func typicalFiles(n int) []gitstore.FileChange {
	out := make([]gitstore.FileChange, n)
	for i := range out {
		content := fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: service-%[1]d
  namespace: payments
  labels:
    app.kubernetes.io/name: service-%[1]d
    app.kubernetes.io/part-of: payments
spec:
  replicas: 3
  selector:
    matchLabels:
      app.kubernetes.io/name: service-%[1]d
  template:
    metadata:
      labels:
        app.kubernetes.io/name: service-%[1]d
    spec:
      containers:
        - name: app
          image: registry.example.com/payments/service-%[1]d@sha256:%[2]s
          ports:
            - containerPort: 8080
          env:
            - name: CACHE_TTL
              value: "30s"
            - name: API_TOKEN
              valueFrom:
                secretKeyRef:
                  name: service-%[1]d
                  key: token
            - name: LOG_LEVEL
              value: info
          readinessProbe:
            httpGet:
              path: /healthz
              port: 8080
          resources:
            requests:
              cpu: 250m
              memory: 256Mi
            limits:
              memory: 512Mi
`, i, token("", 64, uint64(i)))
		if i%100 == 0 {
			content += "# GITHUB_TOKEN=" + token("ghp_", 36, uint64(i)) + "\n"
		}
		out[i] = added(fmt.Sprintf("deploy/prod/service-%d.yaml", i), content)
	}
	return out
}

func BenchmarkScan(b *testing.B) {
	if _, err := detector(); err != nil {
		b.Fatal(err)
	}
	known := []string{"sk-test-" + token("", 40, 2)}
	for _, n := range []int{10, 1000, 10000} {
		changes := typicalFiles(n)
		bytes := 0
		for _, c := range changes {
			bytes += len(c.Content)
		}
		b.Run(fmt.Sprintf("files=%d", n), func(b *testing.B) {
			b.SetBytes(int64(bytes))
			for b.Loop() {
				fs, err := Scan(changes, known)
				if err != nil {
					b.Fatal(err)
				}
				if len(fs) != (n+99)/100 {
					b.Fatalf("%d findings, want %d", len(fs), (n+99)/100)
				}
			}
		})
	}
}
