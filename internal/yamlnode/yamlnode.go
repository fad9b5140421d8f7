// Package yamlnode holds small helpers for walking yaml.v3 node trees.
package yamlnode

import "go.yaml.in/yaml/v3"

// MapValue returns the value node of key in the mapping node n, or nil if
// n is nil, not a mapping, or has no such key.
func MapValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}
