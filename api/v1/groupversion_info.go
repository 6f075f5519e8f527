// Package v1 holds the AgentRepository custom resource of the reconciler's
// Kubernetes controller mode (DESIGN §7): one object per desired-state
// repository, reconciled by `reconciler controller`.
//
// +kubebuilder:object:generate=true
// +groupName=agents.reconciler.dev
package v1

//go:generate go run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0 object paths=./...
//go:generate go run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0 crd paths=./... output:crd:artifacts:config=../../config/crd/bases

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of the API.
	GroupVersion = schema.GroupVersion{Group: "agents.reconciler.dev", Version: "v1"}

	// SchemeBuilder adds the API's types to a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the API's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &AgentRepository{}, &AgentRepositoryList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
