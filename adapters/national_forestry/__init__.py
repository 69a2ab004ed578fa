"""国家林草局报送适配器 the national administration's reporting folders (nation-100000-oa)."""
