# src/ daemon build fragment
