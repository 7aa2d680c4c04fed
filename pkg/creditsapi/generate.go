package creditsapi

// The server interface and models, the Go client, and the JSON the service
// serves, all from api/openapi.yaml (the contract). `make generate` runs
// these; TestGeneratedCodeIsCurrent fails when they are stale.
//go:generate go run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen@v2.8.2 -config oapi-codegen.yaml ../../api/openapi.yaml
//go:generate sh -c "cd client && go run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen@v2.8.2 -config oapi-codegen.yaml ../../../api/openapi.yaml"
//go:generate sh -c "cd ../../hack/tools && go run ./openapijson -in ../../api/openapi.yaml -out ../../pkg/creditsapi/openapi.json"
