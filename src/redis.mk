# src/ redis build fragment
