"""Ray Serve hosting of a trained student: a FastAPI ingress in front of a batching model deployment.

>>> from sentidistill.serving import launch
>>> endpoint = launch.start(load_config("jobs/configs/local.yaml"), model="runs/local/train/icldist/model")
>>> endpoint.base_url        # http://127.0.0.1:8000/v1 : OpenAI clients and the `openai` engine
>>> launch.stop(endpoint.app_name)

Routes: POST /v1/sentiment, /v1/extract, /v1/completions, /v1/chat/completions, /v1/score;
GET /v1/models, /v1/stats, /healthz, /metrics, /docs. For `serve run` / `serve deploy` / KubeRay:
`import_path: sentidistill.serving.app:build_app` (see serve/student.yaml).
"""
