package signing

import (
	"context"
	"testing"
)

func BenchmarkSignStatement(b *testing.B) {
	s := newTestSigner(b)
	statement := testStatement(testCommit)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.SignStatement(ctx, statement); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	s := newTestSigner(b)
	bundleJSON, err := s.SignStatement(context.Background(), testStatement(testCommit))
	if err != nil {
		b.Fatal(err)
	}
	v, err := NewVerifier(s.PublicKey())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(bundleJSON); err != nil {
			b.Fatal(err)
		}
	}
}
